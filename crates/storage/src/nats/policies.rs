//! Topic policies on NATS: a subject per policy in the one stream, removal by the hubs with filtered purges, and
//! every policy's removal position in one record beside the stream.
//!
//! Ids stay the stream's sequences, so one stream keeps every policy's events in the one order. A listed policy's
//! events go to `<stream>.p.<hash of its key>`, the default policy's to `<stream>.events` (where every event went
//! before policies). When some policy keeps its own retention or cap, the stream itself has no age or count limit
//! and the hubs remove events (see [`Prune`]): for each policy, the newest message of its subject older than its
//! retention is found with one direct get (`multi_last` with `up_to_time`), the newest one above its cap with one
//! batched direct get, and the subject is purged up to it. The position is written before the purge, so a reader
//! that finds an event gone reads a position that covers it (reads take the record after their messages).
//!
//! The record (`hub-policies.<stream>`, in the stream `<stream>-policies`, one message kept) holds, for the stream
//! as it was created (its creation time: a stream created again starts new positions):
//! - `floor`: every id at or below it is from before the positions were first recorded, and gone;
//! - by subject, the newest id removed from it and how many were; a subject no current policy uses (another
//!   configuration's) is read by every query, removed by the default policy's age, and its position counts for
//!   every read;
//! - the routes, topic patterns to subject, which writers that are not hubs (the publisher crate's sink) follow.
//!
//! A subject new to the record starts at the highest position already recorded: its topics' events may have been
//! removed under another subject before (a reader may be reset once more than needed, never told less).
//! Writes compare and set on the record's sequence, so hubs removing at the same time merge their positions.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::StreamExt;
use protocol::TopicPattern;
use serde::{Deserialize, Serialize};

use super::client::{corrupt, stream_missing, unavailable};
use crate::policy::{PolicySet, PolicyState, TopicPolicies};
use crate::{Error, Result};

/// The most messages one removal round reads to find where a policy's cap falls.
const CAP_SCAN: u64 = 10_000;
/// How long a reply to a direct get may take.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a writer that follows the hubs' routes reads them again.
const ROUTES_REFRESH: Duration = Duration::from_secs(10);
/// How many times a write of the record is tried against other hubs' writes.
const CAS_TRIES: usize = 20;

/// The record of removal positions and routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Positions {
    /// The creation time of the stream these positions belong to.
    created: String,
    /// Every id at or below it is gone.
    floor: u64,
    /// By subject.
    subjects: BTreeMap<String, Position>,
    /// Topic patterns to subject, in policy order, the default subject last.
    routes: Vec<Route>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Position {
    /// The newest id removed from the subject.
    through: u64,
    /// How many were removed.
    removed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Route {
    topics: Vec<String>,
    subject: String,
}

impl Positions {
    /// Whether the record belongs to the stream as `info` shows it (not to one deleted since).
    pub(super) fn is_of(&self, info: &stream::Info) -> bool {
        self.created == info.created.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }

    /// Every event of `subjects`, and of subjects no route uses, with an id above the answer is retained.
    pub(super) fn through<'a>(&self, subjects: impl Iterator<Item = &'a String>) -> u64 {
        let routed = |s: &String| self.routes.iter().any(|r| &r.subject == s);
        let retired = self.subjects.iter().filter(|(s, _)| !routed(s)).map(|(_, p)| p.through);
        let reached = subjects.filter_map(|s| self.subjects.get(s)).map(|p| p.through);
        retired.chain(reached).fold(self.floor, u64::max)
    }

    /// The subject `topic` goes to, by the routes; `None` when there are none (the stream keeps no policies).
    fn route(&self, topic: &str) -> Option<&str> {
        let last = self.routes.len().checked_sub(1)?;
        self.routes
            .iter()
            .enumerate()
            .find(|(i, r)| {
                *i == last || r.topics.iter().any(|t| TopicPattern::parse(t.as_str()).is_ok_and(|p| p.matches(topic)))
            })
            .map(|(_, r)| r.subject.as_str())
    }
}

/// How the NATS log keeps its topic policies.
pub(super) struct NatsPolicies {
    pub(super) policies: TopicPolicies,
    /// By policy index.
    subjects: Vec<String>,
    /// Some policy keeps its own retention or cap: the hubs remove events, the stream has no limits of its own.
    pub(super) managed: bool,
    /// Whether this process keeps the policies (a hub), or follows the hubs' routes (a publishing service).
    keeps: bool,
    stream: String,
    /// The log's replicas, which the record's stream is created with.
    replicas: usize,
    records: String,
    record_subject: String,
    /// A follower's routes, and when they were read.
    followed: tokio::sync::Mutex<Option<(tokio::time::Instant, Positions)>>,
}

impl NatsPolicies {
    /// `policies`: the hubs' own; `None` follows the routes the hubs recorded.
    pub(super) fn new(
        stream: &str,
        replicas: usize,
        policies: Option<TopicPolicies>,
        default: crate::Retention,
    ) -> Self {
        let keeps = policies.is_some();
        let policies = policies.unwrap_or_else(|| TopicPolicies::single(default));
        let subjects = policies
            .iter()
            .map(|p| if p.is_default() { format!("{stream}.events") } else { format!("{stream}.p.{}", p.key_hash()) })
            .collect();
        let managed = policies.iter().any(|p| p.own_retention);
        Self {
            policies,
            subjects,
            managed,
            keeps,
            stream: stream.to_owned(),
            replicas,
            records: format!("{stream}-policies"),
            record_subject: format!("hub-policies.{stream}"),
            followed: tokio::sync::Mutex::new(None),
        }
    }

    /// The stream of records, created when absent (by a hub that keeps policies of their own).
    async fn records(&self, js: &jetstream::Context) -> Result<Option<stream::Stream>> {
        match js.get_stream(&self.records).await {
            Ok(records) => Ok(Some(records)),
            // Only hubs with policies of their own create it (others only clear the routes of one that exists).
            Err(e) if stream_missing(&e) && !(self.keeps && self.managed) => Ok(None),
            Err(e) if stream_missing(&e) => {
                let config = stream::Config {
                    name: self.records.clone(),
                    subjects: vec![self.record_subject.clone()],
                    max_messages_per_subject: 1,
                    storage: stream::StorageType::File,
                    num_replicas: self.replicas,
                    description: Some("realtime hub: the topic policies' removal positions and routes".into()),
                    ..Default::default()
                };
                js.get_or_create_stream(config).await.map(Some).map_err(unavailable)
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// The record and its sequence (0: none).
    async fn load<I>(&self, records: &stream::Stream<I>) -> Result<(Positions, u64)> {
        match records.get_last_raw_message_by_subject(&self.record_subject).await {
            Ok(message) => {
                let positions = serde_json::from_slice(&message.payload)
                    .map_err(|e| corrupt(format!("the topic policies' record: {e}")))?;
                Ok((positions, message.sequence))
            }
            // No record yet, or no stream of records (no hub keeps policies of their own).
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                Ok((Positions::default(), 0))
            }
            Err(e)
                if matches!(e.kind(), jetstream::stream::LastRawMessageErrorKind::JetStream(js)
                if js.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) =>
            {
                Ok((Positions::default(), 0))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Writes the record if it is still at `sequence`; `false` when another write came first.
    async fn store(&self, js: &jetstream::Context, positions: &Positions, sequence: u64) -> Result<bool> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", sequence.to_string().as_str());
        let payload = serde_json::to_vec(positions).expect("positions serialize");
        let published = js.publish_with_headers(self.record_subject.clone(), headers, payload.into()).await;
        match published.map_err(unavailable)?.await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Changes the record with `change`, retrying against other hubs' writes; returns what was written. A record of
    /// an earlier stream (deleted and created again) is replaced by a new one with this hub's routes and subjects.
    async fn update(
        &self,
        js: &jetstream::Context,
        records: &stream::Stream,
        info: &stream::Info,
        change: impl Fn(&mut Positions),
    ) -> Result<Positions> {
        for _ in 0..CAS_TRIES {
            let (mut positions, sequence) = self.load(records).await?;
            let before = positions.clone();
            let created = info.created.to_rfc3339_opts(SecondsFormat::Nanos, true);
            if positions.created != created {
                let first =
                    if info.state.messages == 0 { info.state.last_sequence + 1 } else { info.state.first_sequence };
                positions = Positions { created, floor: first.saturating_sub(1), ..Positions::default() };
                self.record_own(&mut positions);
            }
            change(&mut positions);
            if positions == before || self.store(js, &positions, sequence).await? {
                return Ok(positions);
            }
        }
        Err(Error::Unavailable("the topic policies' record kept changing under this hub".into()))
    }

    /// Puts this hub's routes in the record, and its subjects new to the record at their starting position; a hub
    /// whose policies keep no retention of their own drops the routes (writers then use the default subject).
    fn record_own(&self, positions: &mut Positions) {
        if !self.managed {
            positions.routes.clear();
            return;
        }
        let start = positions.subjects.values().map(|p| p.through).fold(positions.floor, u64::max);
        for subject in &self.subjects {
            positions.subjects.entry(subject.clone()).or_insert(Position { through: start, removed: 0 });
        }
        positions.routes = self
            .policies
            .iter()
            .zip(&self.subjects)
            .map(|(p, s)| Route { topics: p.topics.iter().map(ToString::to_string).collect(), subject: s.clone() })
            .collect();
    }

    /// A hub's start: records its routes and subjects (see `record_own`).
    pub(super) async fn register(&self, js: &jetstream::Context, info: &stream::Info) -> Result<()> {
        if !self.keeps {
            return Ok(());
        }
        let Some(records) = self.records(js).await? else { return Ok(()) };
        self.update(js, &records, info, |positions| self.record_own(positions)).await?;
        Ok(())
    }

    /// The subject an event of `topic` goes to.
    pub(super) async fn subject_of(&self, js: &jetstream::Context, topic: &str) -> Result<String> {
        if self.keeps {
            let index = if self.managed { self.policies.index_of(topic) } else { self.policies.len() - 1 };
            return Ok(self.subjects[index].clone());
        }
        let mut followed = self.followed.lock().await;
        if followed.as_ref().is_none_or(|(read, _)| read.elapsed() >= ROUTES_REFRESH) {
            let positions = self.positions(js).await?;
            *followed = Some((tokio::time::Instant::now(), positions));
        }
        let positions = &followed.as_ref().expect("read above").1;
        Ok(positions.route(topic).map_or_else(|| format!("{}.events", self.stream), str::to_owned))
    }

    /// The subjects of the policies of `set`.
    pub(super) fn subjects_of(&self, set: PolicySet) -> impl Iterator<Item = &String> {
        self.policies.members(set).map(|i| &self.subjects[i])
    }

    /// The current record (a default one when there is none yet).
    /// One request (the record's last message), with no lookup of its stream first: every read takes it.
    pub(super) async fn positions(&self, js: &jetstream::Context) -> Result<Positions> {
        let records = js.get_stream_no_info(&self.records).await.map_err(unavailable)?;
        Ok(self.load(&records).await?.0)
    }

    /// One removal round (see the module's docs); how many events each policy lost.
    pub(super) async fn prune(
        &self,
        client: &async_nats::Client,
        js: &jetstream::Context,
        stream: &mut stream::Stream,
    ) -> Result<Vec<u64>> {
        let mut removed = vec![0; self.policies.len()];
        if !self.managed || !self.keeps {
            return Ok(removed);
        }
        let Some(records) = self.records(js).await? else { return Ok(removed) };
        let info = stream.info().await.map_err(unavailable)?.clone();
        let (positions, _) = self.load(&records).await?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut listed = stream.info_with_subjects(format!("{}.>", self.stream)).await.map_err(unavailable)?;
        while let Some(entry) = listed.next().await {
            let (subject, count) = entry.map_err(unavailable)?;
            counts.insert(subject, count as u64);
        }
        let default_age = self.policies.get(self.policies.len() - 1).max_age;
        let now = Utc::now();
        // Where each subject is to be removed through.
        let mut plan: Vec<(String, Option<usize>, u64)> = Vec::new();
        for (subject, position) in &positions.subjects {
            let index = self.subjects.iter().position(|s| s == subject);
            let (age, cap) = match index.map(|i| self.policies.get(i)) {
                Some(policy) => (policy.max_age, policy.cap.or((policy.max_events > 0).then_some(policy.max_events))),
                None => (default_age, None),
            };
            let cutoff = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let mut through = self.newest_before(client, subject, cutoff).await?.unwrap_or(0);
            let count = counts.get(subject).copied().unwrap_or(0);
            if let Some(cap) = cap.map(|c| c as u64).filter(|cap| count > *cap) {
                let excess = (count - cap).min(CAP_SCAN);
                if let Some(last) = self.nth_after(client, subject, position.through, excess).await? {
                    through = through.max(last);
                }
            }
            if through > position.through {
                plan.push((subject.clone(), index, through));
            }
        }
        if plan.is_empty() {
            return Ok(removed);
        }
        // The positions first: a reader that finds an event gone then reads a position that covers it.
        self.update(js, &records, &info, |positions| {
            for (subject, _, through) in &plan {
                let position = positions.subjects.entry(subject.clone()).or_default();
                position.through = position.through.max(*through);
            }
        })
        .await?;
        let mut purged = Vec::with_capacity(plan.len());
        for (subject, index, through) in &plan {
            let response = stream.purge().filter(subject.as_str()).sequence(through + 1).await.map_err(unavailable)?;
            if let Some(i) = index {
                removed[*i] += response.purged;
            }
            purged.push((subject.clone(), response.purged));
        }
        self.update(js, &records, &info, |positions| {
            for (subject, n) in &purged {
                positions.subjects.entry(subject.clone()).or_default().removed += n;
            }
        })
        .await?;
        Ok(removed)
    }

    /// The newest message of `subject` stored at or before `cutoff`.
    async fn newest_before(
        &self,
        client: &async_nats::Client,
        subject: &str,
        cutoff: DateTime<Utc>,
    ) -> Result<Option<u64>> {
        let time = cutoff.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let request = serde_json::json!({"multi_last": [subject], "up_to_time": time});
        Ok(self.direct_get(client, &request).await?.last().copied())
    }

    /// The sequence of the `n`-th message of `subject` after `after`, or of the last one there is.
    async fn nth_after(&self, client: &async_nats::Client, subject: &str, after: u64, n: u64) -> Result<Option<u64>> {
        let request = serde_json::json!({"seq": after + 1, "next_by_subj": subject, "batch": n});
        Ok(self.direct_get(client, &request).await?.last().copied())
    }

    /// The sequences a (batched) direct get answers, in order.
    async fn direct_get(&self, client: &async_nats::Client, request: &serde_json::Value) -> Result<Vec<u64>> {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.map_err(unavailable)?;
        let subject = format!("$JS.API.DIRECT.GET.{}", self.stream);
        client
            .publish_with_reply(subject, inbox, serde_json::to_vec(request).expect("a request serializes").into())
            .await
            .map_err(unavailable)?;
        let mut sequences = Vec::new();
        loop {
            let reply = tokio::time::timeout(DIRECT_TIMEOUT, replies.next()).await;
            let Ok(Some(reply)) = reply else {
                return Err(Error::Unavailable("a direct get to the NATS stream was not answered".into()));
            };
            match reply.status.map(u16::from) {
                None => {
                    let sequence = reply
                        .headers
                        .as_ref()
                        .and_then(|h| h.get("Nats-Sequence"))
                        .and_then(|v| v.as_str().parse().ok())
                        .ok_or_else(|| corrupt("a direct get answered a message without its sequence"))?;
                    sequences.push(sequence);
                }
                // The end of a batch, or nothing matched.
                Some(204 | 404) => return Ok(sequences),
                Some(code) => {
                    return Err(Error::Unavailable(
                        format!("a direct get to the NATS stream failed: {code} {:?}", reply.description).into(),
                    ));
                }
            }
        }
    }

    /// Each policy's state, from the record.
    pub(super) async fn states(
        &self,
        js: &jetstream::Context,
        stream: &mut stream::Stream,
    ) -> Result<Vec<PolicyState>> {
        let positions = self.positions(js).await?;
        let mut states = Vec::with_capacity(self.policies.len());
        for (policy, subject) in self.policies.iter().zip(&self.subjects) {
            let oldest = match stream.get_first_raw_message_by_subject(subject, positions.floor + 1).await {
                Ok(message) => Some(message.sequence),
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(unavailable(e)),
            };
            let position = positions.subjects.get(subject).copied().unwrap_or_default();
            states.push(PolicyState {
                name: policy.name.clone(),
                oldest,
                removed_through: position.through.max(positions.floor),
                removed: Some(position.removed),
            });
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions() -> Positions {
        let position = |through| Position { through, removed: 0 };
        Positions {
            created: "t".into(),
            floor: 10,
            subjects: BTreeMap::from([
                ("s.p.logs".into(), position(900)),
                ("s.p.audit".into(), position(40)),
                ("s.events".into(), position(5)),
                ("s.p.old".into(), position(60)),
            ]),
            routes: vec![
                Route { topics: vec!["run.logs".into()], subject: "s.p.logs".into() },
                Route { topics: vec!["audit.*".into()], subject: "s.p.audit".into() },
                Route { topics: vec![], subject: "s.events".into() },
            ],
        }
    }

    #[test]
    fn a_read_is_judged_by_its_subjects_and_every_retired_one_never_below_the_floor() {
        let p = positions();
        assert_eq!(p.through([String::from("s.p.audit")].iter()), 60, "the retired subject counts");
        assert_eq!(p.through([String::from("s.p.logs")].iter()), 900);
        let without_retired =
            Positions { subjects: p.subjects.clone().into_iter().filter(|(s, _)| s != "s.p.old").collect(), ..p };
        assert_eq!(without_retired.through([String::from("s.events")].iter()), 10, "the floor");
        assert_eq!(without_retired.through([String::from("s.p.audit")].iter()), 40);
    }

    #[test]
    fn writers_route_by_the_first_matching_policy_and_the_default_last() {
        let p = positions();
        assert_eq!(p.route("run.logs"), Some("s.p.logs"));
        assert_eq!(p.route("audit.login"), Some("s.p.audit"));
        assert_eq!(p.route("run.status"), Some("s.events"));
        assert_eq!(Positions::default().route("run.logs"), None);
    }
}
