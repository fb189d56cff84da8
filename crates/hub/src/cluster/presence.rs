//! Presence: which token subjects subscribe to each exact topic whose policy keeps presence, across the cluster.
//!
//! Each hub counts its own connections per topic and subject. When a subject's first connection to a topic arrives
//! on a hub, or its last one goes, the hub says so to every hub ([`Change`], numbered per hub). A hub keeps the
//! cluster's members of a topic only while one of its subscriptions watches it (asked for `presence`): it asks
//! every hub for its members of the topic (the command every operator listing uses), then applies the changes that
//! came after each hub's answer. A subject joins when its first hub has it and leaves when its last hub lets it go
//! or is gone (not heard for two heartbeats). A change a hub missed (its number skips, or a heartbeat says more
//! were sent) makes it ask again and announce the difference. Nothing of this touches event delivery: a topic's
//! subscribers pay only at subscribe and unsubscribe, and only on topics that keep presence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use actix::Recipient;
use protocol::{PresenceMember, ServerFrame, SubName, TopicPattern};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use storage::TopicPolicies;
use tokio::sync::mpsc;

use crate::delivery::SessionId;
use crate::fanout::sessions::Notice;

/// A token's `info` claim, redacted.
pub type Info = Option<Map<String, Value>>;

/// One hub's change: `subject`'s first connection to `topic` on hub `instance` arrived (`joined`), or its last went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub instance: String,
    /// The hub's count of changes it has said, this one included.
    pub seq: u64,
    pub topic: String,
    pub subject: String,
    #[serde(default)]
    pub info: Info,
    pub joined: bool,
}

/// One hub's member of a topic, as it answers a presence query; `subject` `None` counts the connections without one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubMember {
    pub subject: Option<String>,
    pub connections: u64,
    #[serde(default)]
    pub info: Info,
}

/// One hub's answer to a presence query: its members of the topic as of its change `seq`.
#[derive(Debug, Clone)]
pub struct HubAnswer {
    pub instance: String,
    pub seq: u64,
    pub members: Vec<HubMember>,
}

/// A subscription watching presence.
pub struct Watcher {
    pub session: SessionId,
    pub generation: u64,
    pub sub: SubName,
    pub to: Recipient<Notice>,
    /// It has had the members; from now on it gets joins and leaves.
    greeted: bool,
}

impl Watcher {
    pub fn new(session: SessionId, generation: u64, sub: SubName, to: Recipient<Notice>) -> Self {
        Self { session, generation, sub, to, greeted: false }
    }

    fn tell(&self, frame: ServerFrame) {
        // Queued whatever the mailbox holds (a burst of joins is larger than an actor's mailbox): a session that
        // cannot keep up is cut as a slow consumer by what it writes, never left with a member list that is wrong.
        // A session that stopped takes its watchers out itself.
        self.to.do_send(Notice::Presence { generation: self.generation, frame });
    }
}

/// The exact topics among `patterns` whose policy keeps presence.
pub fn presence_topics(policies: &TopicPolicies, patterns: &[TopicPattern]) -> Vec<String> {
    if !policies.any_presence() {
        return Vec::new();
    }
    patterns
        .iter()
        .filter_map(|p| match p {
            TopicPattern::Exact(topic) if policies.of(topic.as_str()).presence => Some(topic.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// A subscription that asks for presence must name at least one exact topic that keeps it.
pub fn check_watch(policies: &TopicPolicies, subscribe: &protocol::Subscribe) -> Result<(), String> {
    if subscribe.presence && presence_topics(policies, &subscribe.topics).is_empty() {
        return Err("presence is kept for exact topics whose policy says `presence = true` (HUB_TOPIC_POLICIES), \
                    and the subscription names none"
            .to_owned());
    }
    Ok(())
}

pub struct Presence {
    instance: String,
    inner: Mutex<Inner>,
    /// What this hub says, in order; the cluster agent broadcasts it.
    changes: mpsc::UnboundedSender<Change>,
}

#[derive(Default)]
struct Inner {
    /// Changes this hub has said.
    seq: u64,
    /// This hub's connections: topic → subject (`None`: without one) → the sessions, each with how many of its
    /// subscriptions name the topic.
    local: HashMap<String, HashMap<Option<String>, LocalMember>>,
    /// The topics this hub's watchers follow.
    tracked: HashMap<String, Tracked>,
    /// The last change heard from each hub.
    heard: HashMap<String, u64>,
}

#[derive(Default)]
struct LocalMember {
    sessions: HashMap<SessionId, usize>,
    info: Info,
}

#[derive(Default)]
struct Tracked {
    watchers: Vec<Watcher>,
    /// subject → the hubs it is on → its info there.
    members: BTreeMap<String, HashMap<String, Info>>,
    /// While the hubs are asked: the changes heard meanwhile. `None` once the members are known.
    pending: Option<Vec<Change>>,
}

/// What a watched topic's change comes to: a join or a leave for its watchers.
enum Transition {
    Join(String, Info),
    Leave(String),
}

impl Presence {
    /// The presence of hub `instance`, and the receiver of the changes it must say to every hub.
    pub fn new(instance: String) -> (Self, mpsc::UnboundedReceiver<Change>) {
        let (changes, said) = mpsc::unbounded_channel();
        (Self { instance, inner: Mutex::default(), changes }, said)
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many changes this hub has said (its heartbeat carries it).
    pub fn seq(&self) -> u64 {
        self.inner().seq
    }

    /// A subscription of `session` names `topic`.
    pub fn enter(&self, topic: &str, session: SessionId, subject: Option<&str>, info: Info) {
        let mut inner = self.inner();
        let member = inner.local.entry(topic.to_owned()).or_default().entry(subject.map(str::to_owned)).or_default();
        let first = member.sessions.is_empty();
        *member.sessions.entry(session).or_default() += 1;
        if first {
            member.info = info.clone();
            if let Some(subject) = subject {
                self.say(&mut inner, topic, subject, info, true);
            }
        }
    }

    /// A subscription of `session` naming `topic` went.
    pub fn exit(&self, topic: &str, session: SessionId, subject: Option<&str>) {
        let mut inner = self.inner();
        let Some(members) = inner.local.get_mut(topic) else { return };
        let key = subject.map(str::to_owned);
        let Some(member) = members.get_mut(&key) else { return };
        if let Some(count) = member.sessions.get_mut(&session) {
            *count -= 1;
            if *count == 0 {
                member.sessions.remove(&session);
            }
        }
        if !member.sessions.is_empty() {
            return;
        }
        members.remove(&key);
        if members.is_empty() {
            inner.local.remove(topic);
        }
        if let Some(subject) = subject {
            self.say(&mut inner, topic, subject, None, false);
        }
    }

    fn say(&self, inner: &mut Inner, topic: &str, subject: &str, info: Info, joined: bool) {
        inner.seq += 1;
        let change = Change {
            instance: self.instance.clone(),
            seq: inner.seq,
            topic: topic.to_owned(),
            subject: subject.to_owned(),
            info,
            joined,
        };
        // The agent outlives the hub's sessions; a hub shutting down has nobody left to tell.
        let _ = self.changes.send(change);
    }

    /// This hub's members of `topic`, as of the change number it answers with.
    pub fn local_members(&self, topic: &str) -> (u64, Vec<HubMember>) {
        let inner = self.inner();
        let members = inner.local.get(topic).map_or_else(Vec::new, |members| {
            members
                .iter()
                .map(|(subject, member)| HubMember {
                    subject: subject.clone(),
                    connections: member.sessions.len() as u64,
                    info: member.info.clone(),
                })
                .collect()
        });
        (inner.seq, members)
    }

    /// Adds a watcher of `topic`; `true` when the hubs must be asked for its members (see [`Presence::answered`]).
    pub fn watch(&self, topic: &str, watcher: Watcher) -> bool {
        let mut inner = self.inner();
        let tracked = inner.tracked.entry(topic.to_owned()).or_default();
        let ask = tracked.watchers.is_empty() && tracked.pending.is_none();
        if ask {
            tracked.pending = Some(Vec::new());
        }
        let mut watcher = watcher;
        if tracked.pending.is_none() {
            watcher.tell(members_frame(&watcher.sub, topic, &tracked.members));
            watcher.greeted = true;
        }
        tracked.watchers.push(watcher);
        ask
    }

    /// Takes the watchers of one subscription out; a topic nobody watches is no longer followed.
    pub fn unwatch(&self, session: SessionId, generation: u64) {
        let mut inner = self.inner();
        inner.tracked.retain(|_, tracked| {
            tracked.watchers.retain(|w| !(w.session == session && w.generation == generation));
            !tracked.watchers.is_empty()
        });
    }

    /// Every hub's answer for `topic` (those alive that did not answer are taken to have nobody there): its members
    /// are known; the changes heard since each answer are applied, and the watchers told.
    pub fn answered(&self, topic: &str, answers: Vec<HubAnswer>) {
        let mut inner = self.inner();
        let Some(tracked) = inner.tracked.get_mut(topic) else { return };
        let mut members: BTreeMap<String, HashMap<String, Info>> = BTreeMap::new();
        let mut as_of = HashMap::new();
        for answer in answers {
            for member in answer.members {
                if let Some(subject) = member.subject {
                    members.entry(subject).or_default().insert(answer.instance.clone(), member.info);
                }
            }
            as_of.insert(answer.instance, answer.seq);
        }
        for change in tracked.pending.take().unwrap_or_default() {
            if as_of.get(&change.instance).is_none_or(|seq| change.seq > *seq) {
                apply(&mut members, &change);
            }
        }
        let before = std::mem::replace(&mut tracked.members, members);
        let transitions = differences(&before, &tracked.members);
        for watcher in &mut tracked.watchers {
            if watcher.greeted {
                for transition in &transitions {
                    watcher.tell(transition_frame(&watcher.sub, topic, transition));
                }
            } else {
                watcher.tell(members_frame(&watcher.sub, topic, &tracked.members));
                watcher.greeted = true;
            }
        }
    }

    /// A change said by any hub (this one included); answers the topics to ask again when changes were missed.
    pub fn heard(&self, change: Change) -> Vec<String> {
        let mut inner = self.inner();
        let last = inner.heard.get(&change.instance).copied();
        if last.is_some_and(|last| change.seq <= last) {
            // Heard already (a hub's messages are not repeated, but a resubscribed listener may see one twice).
            return Vec::new();
        }
        inner.heard.insert(change.instance.clone(), change.seq);
        let missed = last.is_some_and(|last| change.seq > last + 1);
        let Some(tracked) = inner.tracked.get_mut(&change.topic) else {
            return if missed { self.ask_again(&mut inner) } else { Vec::new() };
        };
        match &mut tracked.pending {
            Some(pending) => pending.push(change.clone()),
            None => {
                if let Some(transition) = apply(&mut tracked.members, &change) {
                    for watcher in tracked.watchers.iter().filter(|w| w.greeted) {
                        watcher.tell(transition_frame(&watcher.sub, &change.topic, &transition));
                    }
                }
            }
        }
        if missed { self.ask_again(&mut inner) } else { Vec::new() }
    }

    /// A hub's heartbeat says how many changes it has said: fewer heard means some were missed.
    pub fn heartbeat(&self, instance: &str, seq: u64) -> Vec<String> {
        let mut inner = self.inner();
        match inner.heard.get(instance) {
            Some(heard) if *heard < seq => {
                inner.heard.insert(instance.to_owned(), seq);
                self.ask_again(&mut inner)
            }
            Some(_) => Vec::new(),
            None => {
                inner.heard.insert(instance.to_owned(), seq);
                Vec::new()
            }
        }
    }

    /// Every followed topic, put back to asking (whose answers [`Presence::answered`] compares with what the
    /// watchers were told).
    fn ask_again(&self, inner: &mut Inner) -> Vec<String> {
        let mut topics = Vec::new();
        for (topic, tracked) in &mut inner.tracked {
            if tracked.pending.is_none() {
                tracked.pending = Some(Vec::new());
                topics.push(topic.clone());
            }
        }
        topics
    }

    /// The hubs not in `alive` are gone: their members leave.
    pub fn keep_only(&self, alive: &HashSet<String>) {
        let mut inner = self.inner();
        inner.heard.retain(|instance, _| alive.contains(instance));
        for (topic, tracked) in &mut inner.tracked {
            let mut transitions = Vec::new();
            tracked.members.retain(|subject, hubs| {
                hubs.retain(|instance, _| alive.contains(instance));
                if hubs.is_empty() {
                    transitions.push(Transition::Leave(subject.clone()));
                }
                !hubs.is_empty()
            });
            for watcher in tracked.watchers.iter().filter(|w| w.greeted) {
                for transition in &transitions {
                    watcher.tell(transition_frame(&watcher.sub, topic, transition));
                }
            }
        }
    }
}

/// Applies one hub's change to a topic's members; the join or leave it makes, if any.
fn apply(members: &mut BTreeMap<String, HashMap<String, Info>>, change: &Change) -> Option<Transition> {
    if change.joined {
        let hubs = members.entry(change.subject.clone()).or_default();
        let first = hubs.is_empty();
        hubs.insert(change.instance.clone(), change.info.clone());
        first.then(|| Transition::Join(change.subject.clone(), change.info.clone()))
    } else {
        let hubs = members.get_mut(&change.subject)?;
        hubs.remove(&change.instance)?;
        if !hubs.is_empty() {
            return None;
        }
        members.remove(&change.subject);
        Some(Transition::Leave(change.subject.clone()))
    }
}

/// The joins and leaves that take `before` to `after`.
fn differences(
    before: &BTreeMap<String, HashMap<String, Info>>,
    after: &BTreeMap<String, HashMap<String, Info>>,
) -> Vec<Transition> {
    let left = before.keys().filter(|s| !after.contains_key(*s)).map(|s| Transition::Leave(s.clone()));
    let joined = after
        .iter()
        .filter(|(s, _)| !before.contains_key(*s))
        .map(|(s, hubs)| Transition::Join(s.clone(), hubs.values().flatten().next().cloned()));
    left.chain(joined).collect()
}

fn members_frame(sub: &SubName, topic: &str, members: &BTreeMap<String, HashMap<String, Info>>) -> ServerFrame {
    let members = members
        .iter()
        .map(|(subject, hubs)| PresenceMember {
            subject: subject.clone(),
            connections: None,
            info: hubs.values().flatten().next().cloned(),
        })
        .collect();
    ServerFrame::Presence { sub: sub.to_string(), topic: topic.to_owned(), members }
}

fn transition_frame(sub: &SubName, topic: &str, transition: &Transition) -> ServerFrame {
    let (sub, topic) = (sub.to_string(), topic.to_owned());
    match transition {
        Transition::Join(subject, info) => ServerFrame::Join {
            sub,
            topic,
            member: PresenceMember { subject: subject.clone(), connections: None, info: info.clone() },
        },
        Transition::Leave(subject) => ServerFrame::Leave {
            sub,
            topic,
            member: PresenceMember { subject: subject.clone(), connections: None, info: None },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(instance: &str, seq: u64, subject: &str, joined: bool) -> Change {
        Change { instance: instance.into(), seq, topic: "chat.1".into(), subject: subject.into(), info: None, joined }
    }

    #[test]
    fn a_subject_joins_on_its_first_hub_and_leaves_with_its_last() {
        let mut members = BTreeMap::new();
        assert!(matches!(apply(&mut members, &change("a", 1, "u1", true)), Some(Transition::Join(s, _)) if s == "u1"));
        assert!(apply(&mut members, &change("b", 1, "u1", true)).is_none(), "already present on hub a");
        assert!(apply(&mut members, &change("a", 2, "u1", false)).is_none(), "still on hub b");
        assert!(matches!(apply(&mut members, &change("b", 2, "u1", false)), Some(Transition::Leave(s)) if s == "u1"));
        assert!(members.is_empty());
    }

    #[test]
    fn local_connections_say_a_change_only_for_a_subjects_first_and_last() {
        let (presence, mut said) = Presence::new("a".into());
        let (s1, s2) = (SessionId::new(), SessionId::new());
        presence.enter("chat.1", s1, Some("u1"), None);
        presence.enter("chat.1", s1, Some("u1"), None);
        presence.enter("chat.1", s2, Some("u1"), None);
        presence.enter("chat.1", s2, None, None);
        presence.exit("chat.1", s1, Some("u1"));
        presence.exit("chat.1", s1, Some("u1"));
        let (seq, mut members) = presence.local_members("chat.1");
        members.sort_by(|a, b| a.subject.cmp(&b.subject));
        presence.exit("chat.1", s2, Some("u1"));

        assert_eq!(seq, 1);
        assert_eq!(
            members.iter().map(|m| (m.subject.as_deref(), m.connections)).collect::<Vec<_>>(),
            [(None, 1), (Some("u1"), 1)]
        );
        let first = said.try_recv().unwrap();
        let second = said.try_recv().unwrap();
        assert!(said.try_recv().is_err(), "two changes only");
        assert_eq!((first.seq, first.joined, second.seq, second.joined), (1, true, 2, false));
    }

    #[test]
    fn a_skipped_change_number_or_a_heartbeat_ahead_asks_the_hubs_again() {
        let (presence, _said) = Presence::new("a".into());
        presence.inner().tracked.insert("chat.1".into(), Tracked::default());
        assert!(presence.heard(change("b", 1, "u1", true)).is_empty());
        assert!(presence.heard(change("b", 2, "u2", true)).is_empty());
        assert_eq!(presence.heard(change("b", 4, "u3", true)), vec!["chat.1".to_owned()], "3 was missed");
        presence.answered("chat.1", Vec::new());
        assert!(presence.heartbeat("b", 4).is_empty());
        assert_eq!(presence.heartbeat("b", 5), vec!["chat.1".to_owned()], "the change numbered 5 never came");
    }
}
