//! The NATS JetStream event log: a stream replicated across a NATS cluster, with no single primary.
//!
//! An event's id *is* its stream sequence: JetStream assigns sequences densely, in the order events are stored, on
//! the stream's Raft leader, and a publish is acknowledged only once a quorum of replicas stored it. Retention is the
//! stream's own `max_age` and message cap, which remove events from the front only, so the retained ids stay dense.
//!
//! Epochs. A stream deleted and created again would start its sequences at 1 and hand out ids that clients already
//! hold. A hub that creates the stream therefore starts its sequences above every id that can have been handed out
//! before: it creates the stream on a subject nobody publishes to, purges it up to the clock in microseconds (an
//! empty stream's next sequence becomes that number), and only then opens the real subject. Readers of the old
//! stream then stand below the new history, which every read reports as lost events (`reset`), never as silence or
//! reused ids. The clock bound holds while the log averaged under a million events a second over its life, as for
//! the Redis log. See `docs/NATS.md`.
//!
//! Topic policies (see [`policies`]): with a policy that keeps its own retention or cap, each policy's events go to
//! a subject of their own in the one stream, and the hubs remove them with filtered purges, recording how far each
//! policy was removed; the stream then has no limits of its own.
//!
//! The server must be NATS 2.12 or later (JetStream API level 2), judged by what it reports at connect.
//!
//! Live delivery: the storage actor's feed is an ordered consumer from its cursor, which pushes the events
//! themselves; the actor reads them from the feed ([`LiveFeed::read`]) and never asks the stream again. Other reads
//! (a subscription's replay, long-poll) open a short-lived ordered consumer at their position.
//!
//! Publishing: the events of a request are sent one after another, each once the one before it is acknowledged
//! (NATS 2.9 has no atomic batch, and an event that failed must not be overtaken by a later one of its request),
//! each with a `Nats-Msg-Id` (the event's idempotency key, else one of the hub's), so a publish retried after a
//! lost acknowledgement or a leader election is stored once.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RawMessageErrorKind, StorageType};
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use protocol::{EventId, NewEvent};

use crate::event::{LogBounds, LogQuery, Page, StoredEvent, decode_new, encode_new};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicySet, PolicyState, TopicPolicies};
use crate::{Error, Result};

mod client;
mod elections;
mod policies;
mod publish;

pub use client::NatsSettings;
pub(crate) use client::connect_client;
use client::{check_api_level, corrupt, stream_missing, unavailable};
use elections::Elections;
use policies::NatsPolicies;
pub use publish::MAX_ATOMIC_BATCH;
use publish::{Outgoing, no_stream};

/// Most requests one read sends to the stream; a filtered read returns fewer events and says how far it looked.
const SCAN_PER_READ: usize = 1000;
/// How long the requests that open the live feed wait for their answer (see `live_feed`).
const FEED_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long opening the live feed waits for the stream's leader before the log actor is told it failed.
const FEED_OPEN_WAIT: Duration = Duration::from_secs(10);
/// How long a publish keeps retrying (a leader election takes seconds) before the caller is told 503.
const PUBLISH_DEADLINE: Duration = Duration::from_secs(5);
/// The longest pause between two attempts: a new leader is found within this of its election.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(250);
/// How long a hub waits for the stream to exist when another hub is creating it, or a new cluster is not ready.
const CREATION_WAIT: Duration = Duration::from_secs(30);
/// How long one request to create the stream waits: a new replicated stream forms its Raft group first.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a retried publish is recognised as a duplicate (JetStream's default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

pub struct NatsLog {
    client: async_nats::Client,
    js: Context,
    settings: NatsSettings,
    /// The subject a stream this process creates is hidden on until its first sequence is set (see the module's
    /// docs): a stream found on it was created by this process, which finishes it.
    hidden: String,
    /// Which subject each topic's events go to, and how each policy's are removed.
    policies: Arc<NatsPolicies>,
    /// The stream's leader elections: what a publish or the feed's opening waiting through one retries on.
    elections: Elections,
}

impl NatsLog {
    /// Stores `events` (one atomic batch), retrying through leader elections for up to `PUBLISH_DEADLINE`.
    async fn store(&self, events: &[Outgoing], ids: &mut [Option<u64>]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + PUBLISH_DEADLINE;
        let mut pause = Duration::from_millis(50);
        while ids.iter().any(Option::is_none) {
            // An attempt (or the stream's lookup after it) still waiting when a leader is elected is sent again
            // at once: sent while the stream had no leader, it is never answered (the same message ids: stored
            // once).
            let mut elected = self.elections.watch();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let failure = tokio::select! {
                failed = tokio::time::timeout(left, self.attempt(events, ids)) => match failed {
                    Ok(Ok(None)) => continue,
                    Ok(Ok(Some(failure))) => failure,
                    Ok(Err(fatal)) => return Err(fatal),
                    Err(_) => "JetStream did not answer before the deadline".into(),
                },
                () = elected.changed() => continue,
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(Error::Unavailable(failure));
            }
            tracing::warn!(error = %failure, events = events.len(), "publishing to NATS failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = elected.changed() => {}
            }
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
        Ok(())
    }

    /// One attempt of `store`: `Some` failure to retry, or an error that retrying cannot mend.
    async fn attempt(&self, events: &[Outgoing], ids: &mut [Option<u64>]) -> Result<Option<async_nats::Error>> {
        let Err(failure) = publish::attempt(&self.client, &self.js, events, ids).await else { return Ok(None) };
        if no_stream(&failure) {
            // Deleted under the hub (a new epoch; the retried messages keep their ids, Nats-Msg-Id), or no leader
            // to answer yet: look the stream up (and create it when it is gone).
            match self.ensure_stream().await {
                Ok(_) => {}
                Err(Error::Unavailable(e)) => return Ok(Some(e)),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(failure))
    }

    /// Connects to the cluster and finds the stream, creating it when absent; refuses a stream whose settings
    /// contradict the hub's (another storage, fewer replicas).
    pub async fn connect(settings: NatsSettings) -> Result<Self> {
        let client = connect_client(&settings).await?;
        let js = jetstream::new(client.clone());
        check_api_level(&client).await?;
        let hidden = format!("{}.new.{}", settings.stream, uuid::Uuid::new_v4().simple());
        let policies = Arc::new(NatsPolicies::new(
            &settings.stream,
            settings.replicas,
            settings.policies.clone(),
            settings.retention,
        ));
        let elections = Elections::follow(&client, &settings.stream).await?;
        let log = Self { client, js, settings, hidden, policies, elections };
        let mut stream = log.ensure_stream().await?;
        let info = stream.info().await.map_err(unavailable)?.clone();
        log.policies.register(&log.js, &info).await?;
        Ok(log)
    }

    /// The stream's configuration as the hub wants it.
    /// With policies the hubs remove events themselves, and the stream keeps everything until they do.
    fn config(&self, subjects: Vec<String>) -> Config {
        let (max_age, max_messages) = if self.policies.managed {
            (Duration::ZERO, -1)
        } else {
            let cap = i64::try_from(self.settings.retention.max_events).ok().filter(|n| *n > 0).unwrap_or(-1);
            (self.settings.retention.max_age, cap)
        };
        Config {
            name: self.settings.stream.clone(),
            subjects,
            storage: StorageType::File,
            num_replicas: self.settings.replicas,
            max_age,
            max_messages,
            discard: DiscardPolicy::Old,
            // The hubs find where a policy's retention and cap fall with direct gets.
            allow_direct: true,
            // A request's events are one atomic batch.
            allow_atomic_publish: true,
            // JetStream refuses a duplicate window longer than the stream's max_age.
            duplicate_window: if max_age.is_zero() { DUPLICATE_WINDOW } else { DUPLICATE_WINDOW.min(max_age) },
            description: Some("realtime hub event log: an event's id is its sequence".into()),
            ..Default::default()
        }
    }

    /// Finds the stream, or creates it in a new epoch; checks and aligns an existing one's settings. A stream that
    /// another hub is creating this instant (still on its hidden subject) is waited for.
    async fn ensure_stream(&self) -> Result<jetstream::stream::Stream> {
        let deadline = tokio::time::Instant::now() + CREATION_WAIT;
        loop {
            match self.find_stream().await? {
                Some(stream) => return Ok(stream),
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => {
                    return Err(Error::Config(format!(
                        "the NATS stream {} was left half-created (on its hidden subject) by a hub that stopped; \
                         delete it and start again",
                        self.settings.stream
                    )));
                }
            }
        }
    }

    /// The stream, checked; `None` while another hub is still creating it.
    async fn find_stream(&self) -> Result<Option<jetstream::stream::Stream>> {
        let name = &self.settings.stream;
        let mut stream = match self.js.get_stream(name).await {
            Ok(stream) => stream,
            Err(e) if stream_missing(&e) && self.settings.keeps_stream => return self.create_stream().await,
            Err(e) if stream_missing(&e) => {
                return Err(Error::Config(format!(
                    "the NATS stream {name} does not exist: the hubs create it when they start"
                )));
            }
            Err(e) => return Err(unavailable(e)),
        };
        let info = stream.info().await.map_err(unavailable)?.clone();
        if info.config.storage != StorageType::File {
            return Err(Error::Config(format!(
                "the NATS stream {name} keeps its messages in memory; the event log needs file storage \
                 (delete the stream or name another with HUB_NATS_STREAM)"
            )));
        }
        if info.config.num_replicas < self.settings.replicas {
            return Err(Error::Config(format!(
                "the NATS stream {name} has {} replicas, fewer than HUB_NATS_REPLICAS={} (raise them with \
                 `nats stream edit`, or lower the setting)",
                info.config.num_replicas, self.settings.replicas
            )));
        }
        let wanted = self.config(vec![format!("{name}.>")]);
        if info.config.subjects == [self.hidden.clone()] {
            // Created by this process, whose request timed out before the answer: finish it.
            return self.open_created(stream).await.map(Some);
        }
        if info.config.subjects.len() == 1 && info.config.subjects[0].starts_with(&format!("{name}.new.")) {
            return Ok(None);
        }
        if info.config.subjects != wanted.subjects {
            return Err(Error::Config(format!(
                "the NATS stream {name} takes the subjects {:?}, not {name}.> (is it another application's?)",
                info.config.subjects
            )));
        }
        // Retention is the hubs' setting: follow it when it changed.
        let retention_changed = info.config.max_age != wanted.max_age
            || info.config.max_messages != wanted.max_messages
            || info.config.allow_direct != wanted.allow_direct
            || info.config.allow_atomic_publish != wanted.allow_atomic_publish;
        if self.settings.keeps_stream && retention_changed {
            let aligned = Config { num_replicas: info.config.num_replicas, ..wanted };
            self.js.update_stream(aligned).await.map_err(unavailable)?;
            tracing::info!(stream = %name, "the NATS stream's retention follows HUB_RETENTION and the topic policies");
        }
        Ok(Some(stream))
    }

    /// Creates the stream with its first sequence above every id handed out before (see the module's docs);
    /// `None` when it cannot be created yet (another hub is creating it, a new cluster has not placed its peers, or
    /// the request timed out: the next look finds the stream if it was made).
    async fn create_stream(&self) -> Result<Option<jetstream::stream::Stream>> {
        let name = &self.settings.stream;
        // A new replicated stream waits for its Raft group to form: give the request longer than the others.
        let mut js = self.js.clone();
        js.set_timeout(CREATE_TIMEOUT);
        // Hidden: publishers get no answer (and retry) until the first sequence is set.
        let stream = match js.create_stream(self.config(vec![self.hidden.clone()])).await {
            Ok(stream) => stream,
            Err(e) => {
                let retry = match e.kind() {
                    CreateStreamErrorKind::JetStream(js) => {
                        js.error_code() == ErrorCode::STREAM_NAME_EXIST
                            || js.error_code() == ErrorCode::CLUSTER_NO_PEERS
                    }
                    CreateStreamErrorKind::TimedOut => true,
                    _ => false,
                };
                if retry {
                    tracing::debug!(error = %e, "the NATS stream cannot be created yet");
                    return Ok(None);
                }
                return Err(Error::Config(format!("the NATS stream {name} is missing and cannot be created: {e}")));
            }
        };
        self.open_created(stream).await.map(Some)
    }

    /// Sets a created stream's first sequence, then opens its real subject.
    async fn open_created(&self, stream: jetstream::stream::Stream) -> Result<jetstream::stream::Stream> {
        let name = &self.settings.stream;
        let first = u64::try_from(Utc::now().timestamp_micros()).unwrap_or(1).max(1);
        // A new replicated stream elects its leader first: retry the two steps until it answers.
        let deadline = tokio::time::Instant::now() + CREATION_WAIT;
        loop {
            let purged = stream.purge().sequence(first).await.map(|_| ()).map_err(|e| format!("purge: {e}"));
            // Open the subject only once every replica is current: publishes into a replicated stream that is still
            // settling fail, each costing its request a retry.
            let settled = match purged {
                Ok(()) => Self::settled(&stream).await,
                Err(e) => Err(e),
            };
            let opened = match settled {
                Ok(()) => self
                    .js
                    .update_stream(self.config(vec![format!("{name}.>")]))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("update: {e}")),
                Err(e) => Err(e),
            };
            match opened {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "the new NATS stream is not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::Config(format!("the new NATS stream {name} could not be opened: {e}"))),
            }
        }
        tracing::info!(stream = %name, first_id = first, replicas = self.settings.replicas, "created the NATS stream");
        // Fetched again: the handle's state is the one from before the purge and the subject.
        self.js.get_stream(name).await.map_err(unavailable)
    }

    /// Whether the stream has a leader and every replica is current.
    async fn settled(stream: &jetstream::stream::Stream) -> std::result::Result<(), String> {
        let mut stream = stream.clone();
        let info = stream.info().await.map_err(|e| format!("info: {e}"))?;
        match &info.cluster {
            Some(cluster) if cluster.leader.is_none() => Err("no leader yet".into()),
            Some(cluster) if cluster.replicas.iter().any(|r| !r.current) => Err("replicas not current yet".into()),
            _ => Ok(()),
        }
    }

    /// The stream, with its state as its leader answered just now (`cached_info`): one request, which the callers
    /// below read their bounds from instead of asking again.
    async fn stream(&self) -> Result<jetstream::stream::Stream> {
        let stream = match self.js.get_stream(&self.settings.stream).await {
            Ok(stream) => stream,
            Err(e) if stream_missing(&e) => return self.ensure_stream().await,
            Err(e) => return Err(unavailable(e)),
        };
        Self::described_by_its_leader(stream.cached_info())?;
        Ok(stream)
    }

    /// A replicated stream with no leader is described by each of its replicas that sees none, with that replica's
    /// own state (nats-server answers STREAM.INFO from a member of a leaderless group), which may be behind what
    /// was stored: a follower applies what its leader committed a moment later. Its head is not the log's, and a
    /// reader ahead of it would be told its position is gone; such an answer is unavailable, and the reader tries
    /// again.
    fn described_by_its_leader(info: &jetstream::stream::Info) -> Result<()> {
        let leader = info.cluster.as_ref().and_then(|cluster| cluster.leader.as_deref()).unwrap_or_default();
        if info.config.num_replicas > 1 && leader.is_empty() {
            return Err(Error::Unavailable("the NATS stream has no leader (an election is under way)".into()));
        }
        Ok(())
    }

    /// The log's bounds in a stream's state, where the stream's own limits remove events (from the front only).
    fn bounds_of(info: &jetstream::stream::Info) -> LogBounds {
        let head = info.state.last_sequence;
        let earliest = if info.state.messages == 0 { head + 1 } else { info.state.first_sequence };
        LogBounds { head, earliest }
    }

    /// A read's bounds: the stream's, or, where the hubs remove events by policy, above the removal positions of
    /// the policies `query` reaches, read now (after the read's messages: see [`policies`]).
    async fn bounds_for(&self, info: &jetstream::stream::Info, query: &LogQuery) -> Result<LogBounds> {
        let bounds = Self::bounds_of(info);
        if !self.policies.managed {
            return Ok(bounds);
        }
        let positions = self.policies.positions(&self.js).await?;
        if !positions.is_of(info) {
            // Recorded for a stream deleted since (the next removal round records this one): nothing below the
            // new stream's first sequence is retained.
            return Ok(bounds);
        }
        let reached = self.policies.policies.reached_by(&query.topics);
        let through = positions.through(self.policies.subjects_of(reached));
        Ok(LogBounds { head: bounds.head, earliest: through + 1 })
    }

    /// Reads `query`'s events from `first` up to `head` (at most `SCAN_PER_READ` requests, or `limit` events) into
    /// `page`, by windows of `READS_IN_FLIGHT` requests that each ask for the first message at or after their
    /// sequence: a range of sequences a policy's purge emptied is crossed by one answer, not asked for one by one.
    async fn scan(
        &self,
        stream: &jetstream::stream::Stream,
        first: u64,
        head: u64,
        query: &LogQuery,
        limit: usize,
        page: &mut Page,
    ) -> Result<()> {
        let every = format!("{}.>", self.settings.stream);
        let mut requests = SCAN_PER_READ.max(limit) as u64;
        page.through = first - 1;
        page.complete = false;
        while page.through < head && requests > 0 {
            let window = page.through + 1..=head.min(page.through + requests.min(READS_IN_FLIGHT as u64));
            requests -= window.end() - window.start() + 1;
            let answers = futures_util::future::join_all(
                window.clone().map(|s| stream.get_first_raw_message_by_subject(&every, s)),
            )
            .await;
            for (probe, answer) in window.zip(answers) {
                if probe <= page.through {
                    // Answered already: an earlier probe's message lay at or beyond this sequence.
                    continue;
                }
                match answer {
                    Ok(message) if message.sequence <= head => {
                        if page.events.len() == limit {
                            return Ok(());
                        }
                        let event = decode(message.sequence, message.time, &message.payload)?;
                        if query.matches(&event) {
                            page.events.push(Arc::new(event));
                        }
                        page.through = message.sequence;
                    }
                    // Nothing up to this read's head from here on (removed, or not yet written when the read began).
                    Ok(_) => page.through = head,
                    Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => page.through = head,
                    Err(e) => return Err(unavailable(e)),
                }
            }
        }
        page.complete = page.through >= head;
        Ok(())
    }

    /// The stream's leader and replicas, for the health answer and `hub smoke`.
    pub async fn describe(&self) -> Result<serde_json::Value> {
        let stream = self.stream().await?;
        let info = stream.cached_info();
        let cluster = info.cluster.as_ref();
        let replicas: Vec<serde_json::Value> = cluster
            .map(|c| {
                c.replicas
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "current": r.current, "lag": r.lag}))
                    .collect()
            })
            .unwrap_or_default();
        Ok(serde_json::json!({
            "stream": info.config.name,
            "leader": cluster.and_then(|c| c.leader.clone()),
            "replicas": info.config.num_replicas,
            "peers": replicas,
            "server": self.client.server_info().server_name,
        }))
    }
}

/// What a message holds of an event: everything but the id, the time and the idempotency key.
fn encode(event: &NewEvent) -> bytes::Bytes {
    encode_new(event).into()
}

fn decode(sequence: u64, time: DateTime<Utc>, payload: &[u8]) -> Result<StoredEvent> {
    let id = EventId::new(sequence).map_err(|e| corrupt(format!("event {sequence}: {e}")))?;
    decode_new(id, time, payload).map_err(|e| corrupt(format!("event {sequence}: {e}")))
}

/// An ordered consumer's messages from a sequence on: the events themselves, in stream order, with how many
/// remain after each.
struct Cursor {
    messages: jetstream::consumer::pull::Ordered,
    /// The sequence the next message must carry for nothing to have been skipped.
    next: u64,
    /// A message received but not yet handed out (the feed's wake-up).
    peeked: Option<jetstream::Message>,
}

/// Reads by sequence sent to the stream's leader at once.
const READS_IN_FLIGHT: usize = 32;

impl Cursor {
    async fn open(stream: &jetstream::stream::Stream, after: u64) -> Result<Self> {
        let config = OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
            ..Default::default()
        };
        let consumer = stream.create_consumer(config).await.map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        Ok(Self { messages, next: after + 1, peeked: None })
    }

    /// The next message, waiting at most `wait` (`Some(Duration::ZERO)`: only one already received; `None`: until
    /// one comes).
    async fn next_message(&mut self, wait: Option<Duration>) -> Result<Option<jetstream::Message>> {
        if let Some(message) = self.peeked.take() {
            return Ok(Some(message));
        }
        let next = match wait {
            Some(wait) => match tokio::time::timeout(wait, self.messages.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(None),
            },
            None => self.messages.next().await,
        };
        match next {
            Some(Ok(message)) => Ok(Some(message)),
            Some(Err(e)) => Err(unavailable(e)),
            None => Err(Error::Unavailable("the NATS consumer ended".into())),
        }
    }

    /// Takes up to `limit` events after `after` that the consumer has already received, without waiting: up to the
    /// head (a message with nothing pending after it) or whatever has arrived so far. `holes`: the hubs remove
    /// events by policy, so the stream has holes anywhere; a page then ends before a skipped sequence, and one
    /// that starts past it says so with `skipped` instead of moving `earliest` (the removal positions tell).
    async fn take(&mut self, after: u64, limit: usize, holes: bool) -> Result<(Page, bool)> {
        let mut skipped = false;
        let mut page = Page {
            events: Vec::new(),
            through: after,
            complete: false,
            bounds: LogBounds { head: after, earliest: after + 1 },
        };
        while page.events.len() < limit {
            let Some(message) = self.next_message(Some(Duration::ZERO)).await? else {
                // Nothing more has arrived: the head as far as this consumer knows.
                page.complete = true;
                break;
            };
            let info = message.info().map_err(|e| corrupt(format!("a message without its metadata: {e}")))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if sequence > self.next && holes && !page.events.is_empty() {
                self.peeked = Some(message);
                break;
            }
            if sequence > self.next && holes {
                skipped = true;
            } else if sequence > self.next && page.events.is_empty() {
                // Retention, or a new epoch, moved the stream's start past this position.
                page.bounds.earliest = sequence;
            }
            page.events.push(Arc::new(decode(sequence, info.published, &message.payload)?));
            self.next = sequence + 1;
            page.through = sequence;
            page.bounds.head = page.bounds.head.max(sequence + pending);
            if pending == 0 {
                page.complete = true;
                break;
            }
        }
        Ok((page, skipped))
    }
}

#[async_trait]
impl EventLog for NatsLog {
    fn provider(&self) -> &'static str {
        "nats"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        // Events of one request that share an idempotency key are one event: the first is sent, the others answer
        // its id.
        let mut outgoing: Vec<Outgoing> = Vec::with_capacity(events.len());
        let mut sent_as: Vec<usize> = Vec::with_capacity(events.len());
        let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for event in &events {
            let key = match &event.idempotency_key {
                Some(key) => key.clone(),
                None => format!("hub-{}", uuid::Uuid::new_v4().simple()),
            };
            if let Some(&first) = by_key.get(&key) {
                sent_as.push(first);
                continue;
            }
            by_key.insert(key.clone(), outgoing.len());
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", key.as_str());
            let subject = self.policies.subject_of(&self.js, event.topic.as_str()).await?;
            sent_as.push(outgoing.len());
            outgoing.push(Outgoing { subject, headers, payload: encode(event) });
        }
        let mut ids: Vec<Option<u64>> = vec![None; outgoing.len()];
        // A request is one atomic batch (the hubs take at most that many); the publisher crate's sink may send
        // more, which go as consecutive batches.
        for (chunk, chunk_ids) in outgoing.chunks(MAX_ATOMIC_BATCH).zip(ids.chunks_mut(MAX_ATOMIC_BATCH)) {
            self.store(chunk, chunk_ids).await?;
        }
        sent_as.into_iter().map(|i| EventId::new(ids[i].expect("every event stored")).map_err(corrupt)).collect()
    }
    /// Reads from the stream's leader, several requests in flight: no consumer is created, so a replay does not wait
    /// for JetStream's meta leader (which a node loss can take away for seconds).
    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        let stream = self.stream().await?;
        let bounds = Self::bounds_of(stream.cached_info());
        let mut page = Page { events: Vec::new(), through: after.max(bounds.head), complete: true, bounds };
        let first = (after + 1).max(bounds.earliest);
        if first <= bounds.head {
            self.scan(&stream, first, bounds.head, query, limit, &mut page).await?;
        }
        // After the events: see `policies`.
        page.bounds = self.bounds_for(stream.cached_info(), query).await?;
        Ok(page)
    }

    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds> {
        self.bounds_for(self.stream().await?.cached_info(), query).await
    }

    fn policies(&self) -> &TopicPolicies {
        &self.policies.policies
    }

    async fn prune(&self) -> Result<Vec<u64>> {
        // Without policies of their own, the stream's max_age and message cap remove old events on the servers.
        let mut stream = self.stream().await?;
        self.policies.prune(&self.client, &self.js, &mut stream).await
    }

    async fn policy_states(&self) -> Result<Vec<PolicyState>> {
        if self.policies.managed {
            return self.policies.states(&self.js, &mut self.stream().await?).await;
        }
        let bounds = self.bounds(&LogQuery::all()).await?;
        Ok(self.policies.policies.iter().map(|p| PolicyState::of_one_position(&p.name, bounds)).collect())
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        // A lookup sent while the stream elects a leader is never answered: the log actor's next try, which finds
        // the new leader, should not wait out the usual timeout first. The consumers the feed opens are created
        // through this handle, with the same timeout.
        let mut js = self.js.clone();
        js.set_timeout(FEED_REQUEST_TIMEOUT);
        let deadline = tokio::time::Instant::now() + FEED_OPEN_WAIT;
        let stream = loop {
            let mut elected = self.elections.watch();
            let looked_up = tokio::select! {
                looked_up = js.get_stream(&self.settings.stream) => looked_up,
                () = elected.changed() => continue,
            };
            match looked_up {
                Ok(stream) => break stream,
                Err(e) if stream_missing(&e) => break self.ensure_stream().await?,
                // No answer (no leader yet): try again at the next election, or after the timeout.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "the NATS stream did not answer; waiting for its leader");
                    let _ = tokio::time::timeout(FEED_REQUEST_TIMEOUT, elected.changed()).await;
                }
                Err(e) => return Err(unavailable(e)),
            }
        };
        let answered = tokio::time::Instant::now();
        let holes = self.policies.managed.then(|| (self.js.clone(), self.policies.clone()));
        Ok(Box::new(NatsFeed { client: self.client.clone(), stream, cursor: None, answered, holes }))
    }

    async fn describe(&self) -> Option<serde_json::Value> {
        match NatsLog::describe(self).await {
            Ok(value) => Some(value),
            Err(e) => Some(serde_json::json!({"stream": self.settings.stream, "error": e.to_string()})),
        }
    }
}

/// How long an idle feed goes without asking the stream's leader whether it is still there.
const LEADER_CHECK: Duration = Duration::from_secs(1);

/// The storage actor's feed: an ordered consumer from its cursor that carries the events themselves.
struct NatsFeed {
    client: async_nats::Client,
    stream: jetstream::stream::Stream,
    cursor: Option<Cursor>,
    /// When the stream last answered (a message, or its leader): an idle feed checks it every `LEADER_CHECK`, so
    /// readiness follows the connection and the stream's leader even when nothing is published.
    answered: tokio::time::Instant,
    /// Where the hubs remove events by policy: what reads the removal positions when the feed skips a sequence.
    holes: Option<(Context, Arc<NatsPolicies>)>,
}

impl NatsFeed {
    /// Fails when the connection is down, or when the feed was idle and the stream's leader does not answer. An
    /// idle consumer that the stream has moved past was lost (it lived on a server that died): it is dropped, and
    /// the next read opens another at the cursor.
    async fn check(&mut self) -> Result<()> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(Error::Unavailable("not connected to NATS".into()));
        }
        if self.answered.elapsed() >= LEADER_CHECK {
            let head = NatsLog::bounds_of(self.stream.info().await.map_err(unavailable)?).head;
            if self.cursor.as_ref().is_some_and(|c| c.peeked.is_none() && head >= c.next) {
                tracing::warn!(head, "the NATS consumer stopped short of the stream's head; opening another");
                self.cursor = None;
            }
            self.answered = tokio::time::Instant::now();
        }
        Ok(())
    }

    /// The consumer positioned right after `after`, opened (again) when the caller moved elsewhere.
    async fn at(&mut self, after: u64) -> Result<&mut Cursor> {
        if self.cursor.as_ref().is_none_or(|c| c.next != after + 1) {
            self.cursor = Some(Cursor::open(&self.stream, after).await?);
        }
        Ok(self.cursor.as_mut().expect("opened above"))
    }
}

#[async_trait]
impl LiveFeed for NatsFeed {
    async fn changed(&mut self, cursor: u64) -> Result<()> {
        let at = self.at(cursor).await?;
        if at.peeked.is_none() {
            // Cancel-safe: a message not yet taken stays in the consumer when the caller's timeout drops this.
            at.peeked = at.next_message(None).await?;
        }
        Ok(())
    }

    async fn read(&mut self, after: u64, limit: usize) -> Result<Option<Page>> {
        self.check().await?;
        let holes = self.holes.is_some();
        let cursor = self.at(after).await?;
        let (mut page, skipped) = cursor.take(after, limit, holes).await?;
        if skipped && let Some((js, policies)) = &self.holes {
            // Removed by some policy before the feed got them: the log actor reads every topic, so the highest
            // position says whether any was.
            let through = policies.positions(js).await?.through(policies.subjects_of(PolicySet::MAX));
            page.bounds.earliest = page.bounds.earliest.max(through + 1);
        }
        if page.through > after {
            self.answered = tokio::time::Instant::now();
        }
        Ok(Some(page))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream's description as nats-server 2.15 answers it, from a replica with `leader` (none: `None`).
    fn described(replicas: usize, leader: Option<&str>) -> jetstream::stream::Info {
        let config = Config { name: "events".into(), num_replicas: replicas, ..Config::default() };
        serde_json::from_value(serde_json::json!({
            "config": serde_json::to_value(config).expect("a stream config"),
            "created": "2026-12-07T03:00:00Z",
            "state": {"messages": 5, "bytes": 500, "first_seq": 1, "first_ts": "2026-12-07T03:00:00Z",
                      "last_seq": 5, "last_ts": "2026-12-07T03:00:01Z", "consumer_count": 0},
            "cluster": {"name": "hub", "leader": leader, "replicas": []},
        }))
        .expect("a stream description")
    }

    #[test]
    fn a_replicated_stream_described_with_no_leader_is_unavailable() {
        assert!(matches!(NatsLog::described_by_its_leader(&described(3, None)), Err(Error::Unavailable(_))));
        assert!(NatsLog::described_by_its_leader(&described(3, Some("n1"))).is_ok());
        assert!(NatsLog::described_by_its_leader(&described(1, None)).is_ok(), "one replica is its own leader");
    }
}
