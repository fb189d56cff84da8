//! The hubs of a cluster as one: which hubs are alive, operators' commands carried out on every hub with every
//! live hub's answer, and the revocations every hub refuses.
//!
//! Hubs talk over the backend they share ([`storage::Cluster`]: PostgreSQL `NOTIFY`, Redis `PUBLISH`, a NATS
//! subject, a channel for the memory backend), never through the event log. Each hub says it is alive every
//! `HUB_HEARTBEAT`; one not heard for two heartbeats is taken for gone. A command goes to every hub at once; each
//! carries it out on its own connections and answers; the caller waits for every hub alive when it asked, for at
//! most [`ANSWER_WITHIN`], and says which did not answer. The same knowledge of who is connected where serves the
//! connection list and every command. Revocations are records in the backend (they outlive a restart) and a set
//! in each hub, which every authentication checks.

mod messages;
pub mod presence;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use storage::cluster::{MAX_MESSAGE_BYTES, Record};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use self::messages::Command;
use self::messages::{Answer, Message};
use self::presence::{Change, HubAnswer, Presence};
use crate::auth::{Revocation, Revocations};
use crate::fanout::sessions::{ConnectionInfo, Cut, Sessions};

/// How long a command waits for the hubs' answers.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// What a command came to, over every hub that answered.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The hubs (node ids) that answered.
    pub hubs: BTreeSet<String>,
    /// The hubs alive when the command went out that did not answer in time.
    pub missing: BTreeSet<String>,
    /// WebSocket and SSE connections closed.
    pub closed: usize,
    /// Waiting long-poll requests answered at once.
    pub polls: usize,
    /// For a listing: the connections.
    pub connections: Vec<ConnectionInfo>,
    /// For a presence query: each hub's members.
    pub presence: Vec<HubAnswer>,
}

pub struct ClusterAgent {
    /// This hub's node id (as `welcome` and listings show it) and an id of this process, unique even where two
    /// hubs share a node id.
    node: String,
    instance: String,
    bus: Arc<dyn storage::Cluster>,
    sessions: Arc<Sessions>,
    revocations: Arc<Revocations>,
    heartbeat: Duration,
    /// The hubs heard from, by instance: their node id, and when.
    alive: Mutex<HashMap<String, (String, Instant)>>,
    /// Commands of this hub waiting for answers, by command id.
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Answer>>>,
    /// Who subscribes to the topics that keep presence, here and on the other hubs.
    pub presence: Presence,
}

impl ClusterAgent {
    /// Loads the revocations the backend keeps, starts listening, says this hub is alive, and keeps saying it
    /// every `heartbeat`.
    pub async fn start(
        node: String,
        bus: Arc<dyn storage::Cluster>,
        sessions: Arc<Sessions>,
        revocations: Arc<Revocations>,
        heartbeat: Duration,
    ) -> storage::Result<Arc<Self>> {
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let (presence, changes) = Presence::new(instance.clone());
        let agent = Arc::new(Self {
            node,
            instance,
            bus,
            sessions,
            revocations,
            heartbeat,
            alive: Mutex::default(),
            waiting: Mutex::default(),
            presence,
        });
        agent.reload_revocations().await?;
        let messages = agent.bus.listen().await?;
        tokio::spawn(receive(Arc::downgrade(&agent), messages));
        tokio::spawn(beat(Arc::downgrade(&agent)));
        tokio::spawn(tell_changes(Arc::downgrade(&agent), changes));
        tokio::spawn(sweep(Arc::downgrade(&agent)));
        agent.say(&agent.heartbeat_message()).await;
        Ok(agent)
    }

    fn heartbeat_message(&self) -> Message {
        Message::Heartbeat { node: self.node.clone(), instance: self.instance.clone(), presence: self.presence.seq() }
    }

    /// Asks every hub for its members of each of `topics`, for the watchers of this hub.
    pub fn ask_presence(self: &Arc<Self>, topics: Vec<String>) {
        for topic in topics {
            let agent = self.clone();
            tokio::spawn(async move {
                let outcome = agent.command(Command::Presence { topic: topic.clone() }).await;
                agent.presence.answered(&topic, outcome.presence);
            });
        }
    }

    /// The hubs alive now (heard from within two heartbeats), this one included: instance → node id.
    fn alive_instances(&self) -> HashMap<String, String> {
        let horizon = self.heartbeat * 2;
        let mut alive = self.alive.lock().unwrap_or_else(|e| e.into_inner());
        alive.retain(|_, (_, heard)| heard.elapsed() <= horizon);
        let mut nodes: HashMap<String, String> = alive.iter().map(|(i, (node, _))| (i.clone(), node.clone())).collect();
        nodes.insert(self.instance.clone(), self.node.clone());
        nodes
    }

    /// Sends `command` to every hub and collects their answers (see the module's docs).
    pub async fn command(&self, command: Command) -> Outcome {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let expected = self.alive_instances();
        let (tx, mut answers) = mpsc::unbounded_channel();
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), tx);
        let request = Message::Request { id: id.clone(), command };
        self.say(&request).await;
        let mut outcome = Outcome::default();
        let mut done = BTreeSet::new();
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        while !expected.keys().all(|instance| done.contains(instance)) {
            let answer = tokio::select! {
                answer = answers.recv() => answer,
                _ = tokio::time::sleep_until(deadline) => None,
            };
            let Some(answer) = answer else { break };
            outcome.hubs.insert(answer.node.clone());
            outcome.closed += answer.closed;
            outcome.polls += answer.polls;
            outcome.connections.extend(answer.connections);
            if !answer.members.is_empty() || answer.last {
                match outcome.presence.iter_mut().find(|a| a.instance == answer.instance) {
                    Some(known) => known.members.extend(answer.members),
                    None => outcome.presence.push(HubAnswer {
                        instance: answer.instance.clone(),
                        seq: answer.presence_seq,
                        members: answer.members,
                    }),
                }
            }
            if answer.last {
                done.insert(answer.instance);
            }
        }
        self.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        outcome.missing =
            expected.iter().filter(|(instance, _)| !done.contains(*instance)).map(|(_, node)| node.clone()).collect();
        outcome
    }

    /// Keeps `revocation` in the backend, then has every hub refuse its tokens and close their connections.
    pub async fn revoke(&self, revocation: Revocation) -> storage::Result<Outcome> {
        let until = chrono::DateTime::from_timestamp(revocation.until as i64, 0).unwrap_or_else(Utc::now);
        let value = serde_json::to_string(&revocation).expect("a revocation always serializes");
        self.bus.put(Record { key: revocation.key(), value, until }).await?;
        Ok(self.command(Command::Revoke { revocation }).await)
    }

    /// Lifts the revocation `key` in the backend and on every hub; whether there was one.
    pub async fn lift(&self, key: &str) -> storage::Result<(bool, Outcome)> {
        let held = self.bus.remove(key).await?;
        Ok((held, self.command(Command::Lift { key: key.to_owned() }).await))
    }

    /// The revocations in force.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.revocations.list()
    }

    async fn reload_revocations(&self) -> storage::Result<()> {
        let records = self.bus.records().await?;
        let revocations = records.iter().filter_map(|record| match serde_json::from_str(&record.value) {
            Ok(revocation) => Some(revocation),
            Err(e) => {
                warn!(key = record.key, error = %e, "a revocation record the hub cannot read is ignored");
                None
            }
        });
        self.revocations.replace(revocations);
        Ok(())
    }

    async fn say(&self, message: &Message) {
        let text = serde_json::to_string(message).expect("a cluster message always serializes");
        if let Err(e) = self.bus.broadcast(&text).await {
            warn!(error = %e, "a message to the other hubs could not be sent");
        }
    }

    /// Carries out `command` on this hub's connections and answers it.
    async fn carry_out(&self, id: String, command: Command) {
        let mut answer = Answer {
            id,
            node: self.node.clone(),
            instance: self.instance.clone(),
            last: true,
            closed: 0,
            polls: 0,
            connections: Vec::new(),
            members: Vec::new(),
            presence_seq: 0,
        };
        match command {
            Command::List => {
                let mut connections = self.sessions.describe().await;
                // A connection with more subscriptions than one message holds is listed with the ones that fit.
                for connection in &mut connections {
                    while size_of(&connection) + EMPTY_ANSWER_BYTES > MAX_MESSAGE_BYTES
                        && connection.subscriptions.pop().is_some()
                    {}
                }
                return self.answer_in_parts(answer, connections, |a| &mut a.connections).await;
            }
            Command::Presence { topic } => {
                let (seq, mut members) = self.presence.local_members(&topic);
                for member in &mut members {
                    if size_of(&member) + EMPTY_ANSWER_BYTES > MAX_MESSAGE_BYTES {
                        member.info = None;
                    }
                }
                answer.presence_seq = seq;
                return self.answer_in_parts(answer, members, |a| &mut a.members).await;
            }
            Command::Cut { cut } => (answer.closed, answer.polls) = self.sessions.cut(cut).await,
            Command::Revoke { revocation } => {
                self.revocations.insert(revocation.clone());
                (answer.closed, answer.polls) = self.sessions.cut(Cut::Revoked(revocation)).await;
            }
            Command::Lift { key } => {
                self.revocations.remove(&key);
            }
        }
        if answer.closed > 0 || answer.polls > 0 {
            info!(closed = answer.closed, polls = answer.polls, "an operator's command closed connections here");
        }
        self.say(&Message::Answer(answer)).await;
    }

    /// An answer with a list (`place` says which), in as many messages as the backend's message size needs.
    async fn answer_in_parts<T: serde::Serialize>(
        &self,
        answer: Answer,
        items: Vec<T>,
        place: fn(&mut Answer) -> &mut Vec<T>,
    ) {
        let mut part = Answer { last: false, ..answer };
        let mut size = size_of(&Message::Answer(part.clone()));
        for item in items {
            let one = size_of(&item) + 1;
            if size + one > MAX_MESSAGE_BYTES && !place(&mut part).is_empty() {
                self.say(&Message::Answer(part.clone())).await;
                place(&mut part).clear();
                size = size_of(&Message::Answer(part.clone()));
            }
            size += one;
            place(&mut part).push(item);
        }
        part.last = true;
        self.say(&Message::Answer(part)).await;
    }
}

/// What an answer with no list weighs, ids and names included, with room to spare.
const EMPTY_ANSWER_BYTES: usize = 512;

fn size_of(value: &impl serde::Serialize) -> usize {
    serde_json::to_string(value).map_or(0, |s| s.len())
}

/// Handles what the other hubs (and this one) say, until the agent is gone.
async fn receive(agent: std::sync::Weak<ClusterAgent>, mut messages: mpsc::UnboundedReceiver<String>) {
    while let Some(text) = messages.recv().await {
        let Some(agent) = agent.upgrade() else { return };
        let message = match serde_json::from_str::<Message>(&text) {
            Ok(message) => message,
            Err(e) => {
                debug!(error = %e, "a cluster message this hub does not understand is ignored");
                continue;
            }
        };
        match message {
            Message::Heartbeat { node, instance, presence } => {
                if instance == agent.instance {
                    continue;
                }
                let missed = agent.presence.heartbeat(&instance, presence);
                agent.ask_presence(missed);
                let new = agent
                    .alive
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(instance, (node.clone(), Instant::now()))
                    .is_none();
                if new {
                    // A hub that just came learns of this one at once, not a heartbeat later.
                    info!(node, "a hub joined the cluster");
                    let hello = agent.heartbeat_message();
                    tokio::spawn(async move { agent.say(&hello).await });
                }
            }
            Message::Request { id, command } => {
                tokio::spawn(async move { agent.carry_out(id, command).await });
            }
            Message::Presence(change) => {
                let missed = agent.presence.heard(change);
                agent.ask_presence(missed);
            }
            Message::Answer(answer) => {
                let waiting = agent.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(tx) = waiting.get(&answer.id) {
                    let _ = tx.send(answer);
                }
            }
        }
    }
}

/// Says this hub is alive every heartbeat, and reads the revocations the backend keeps again (a revocation
/// whose message this hub missed is in force here within a heartbeat).
async fn beat(agent: std::sync::Weak<ClusterAgent>) {
    let Some(every) = agent.upgrade().map(|a| a.heartbeat) else { return };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(agent) = agent.upgrade() else { return };
        agent.say(&agent.heartbeat_message()).await;
        if let Err(e) = agent.reload_revocations().await {
            debug!(error = %e, "reading the revocations failed; keeping those held");
        }
    }
}

/// Says this hub's presence changes to every hub, in the order they happened.
async fn tell_changes(agent: std::sync::Weak<ClusterAgent>, mut changes: mpsc::UnboundedReceiver<Change>) {
    while let Some(change) = changes.recv().await {
        let Some(agent) = agent.upgrade() else { return };
        agent.say(&Message::Presence(change)).await;
    }
}

/// Lets the members of hubs not heard for two heartbeats go, ten times a heartbeat: a hub that died takes its
/// members with it within two heartbeats (and a tenth) of its last word.
async fn sweep(agent: std::sync::Weak<ClusterAgent>) {
    let Some(every) = agent.upgrade().map(|a| a.heartbeat / 10) else { return };
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    loop {
        ticks.tick().await;
        let Some(agent) = agent.upgrade() else { return };
        let alive: HashSet<String> = agent.alive_instances().into_keys().collect();
        agent.presence.keep_only(&alive);
    }
}
