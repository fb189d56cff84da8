//! A topic room: the subscriptions of one topic pattern, indexed by the scope pair each one routes on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use actix::prelude::*;
use protocol::TopicPattern;
use storage::SharedEvent;
use tokio::sync::oneshot;

use crate::delivery::{SharedSubscriber, SubKey};

/// Adds (or replaces) a subscription; `joined` fires once the room will route to it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddSubscriber {
    pub subscriber: SharedSubscriber,
    pub joined: oneshot::Sender<()>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveSubscriber {
    pub key: SubKey,
}

/// Asks which subscriptions match the events at `indices` of `events`; the answer goes to `matched`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    pub events: Arc<[SharedEvent]>,
    pub indices: Vec<u32>,
    pub matched: oneshot::Sender<Vec<Match>>,
}

/// One event (by its index in the batch) for one subscription. The subscription's key is kept beside it: the
/// dispatcher sorts a batch's matches by key, and a key read through the shared subscriber would cost a cache miss
/// per comparison.
#[derive(Debug, Clone)]
pub struct Match {
    pub index: u32,
    pub key: SubKey,
    pub subscriber: SharedSubscriber,
}

/// The subscriptions of one topic pattern. A subscription with a filter is indexed under the filter's routing
/// pair (its most selective key), so an event only costs work for subscriptions whose routing pair is in its
/// scope: a filter on `project_id=p1` is never looked at for an event of p2. Subscriptions are kept in key order,
/// so a room's matches for one event come in the order the dispatcher sorts them into, and its sort only checks.
pub struct TopicRoom {
    pattern: TopicPattern,
    unfiltered: BTreeMap<SubKey, SharedSubscriber>,
    /// scope key → scope value → subscriptions routed on that pair.
    by_pair: HashMap<String, HashMap<String, BTreeMap<SubKey, SharedSubscriber>>>,
    /// Where each subscription is indexed, to remove it without a scan.
    placement: HashMap<SubKey, Option<(String, String)>>,
}

impl TopicRoom {
    pub fn new(pattern: TopicPattern) -> Self {
        Self { pattern, unfiltered: BTreeMap::new(), by_pair: HashMap::new(), placement: HashMap::new() }
    }

    fn remove(&mut self, key: &SubKey) {
        match self.placement.remove(key) {
            Some(None) => {
                self.unfiltered.remove(key);
            }
            Some(Some((k, v))) => {
                if let Some(values) = self.by_pair.get_mut(&k) {
                    if let Some(subs) = values.get_mut(&v) {
                        subs.remove(key);
                        if subs.is_empty() {
                            values.remove(&v);
                        }
                    }
                    if values.is_empty() {
                        self.by_pair.remove(&k);
                    }
                }
            }
            None => {}
        }
    }
}

impl Actor for TopicRoom {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Self::Context) {
        tracing::debug!(pattern = %self.pattern, "room opened");
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        tracing::debug!(pattern = %self.pattern, "room closed");
    }
}

impl Handler<AddSubscriber> for TopicRoom {
    type Result = ();

    fn handle(&mut self, msg: AddSubscriber, _: &mut Self::Context) {
        let subscriber = msg.subscriber;
        self.remove(&subscriber.key);
        let pair = subscriber.filter.routing_pair().map(|(k, v)| (k.to_owned(), v.to_owned()));
        match &pair {
            None => {
                self.unfiltered.insert(subscriber.key, subscriber.clone());
            }
            Some((k, v)) => {
                self.by_pair
                    .entry(k.clone())
                    .or_default()
                    .entry(v.clone())
                    .or_default()
                    .insert(subscriber.key, subscriber.clone());
            }
        }
        self.placement.insert(subscriber.key, pair);
        // The session may be gone already; then nothing waits for the answer.
        let _ = msg.joined.send(());
    }
}

impl Handler<RemoveSubscriber> for TopicRoom {
    type Result = ();

    fn handle(&mut self, msg: RemoveSubscriber, _: &mut Self::Context) {
        self.remove(&msg.key);
    }
}

impl Handler<Route> for TopicRoom {
    type Result = ();

    fn handle(&mut self, msg: Route, _: &mut Self::Context) {
        let mut matches = Vec::with_capacity(self.unfiltered.len() * msg.indices.len());
        for &index in &msg.indices {
            let event = &msg.events[index as usize];
            let scope = &event.envelope.scope;
            for (&key, subscriber) in &self.unfiltered {
                matches.push(Match { index, key, subscriber: subscriber.clone() });
            }
            for (key, value) in scope.iter() {
                let Some(candidates) = self.by_pair.get(key).and_then(|values| values.get(value)) else {
                    continue;
                };
                for (&key, subscriber) in candidates {
                    if subscriber.filter.matches(scope) {
                        matches.push(Match { index, key, subscriber: subscriber.clone() });
                    }
                }
            }
        }
        // The dispatcher drops its end only when it stops; then there is nobody to deliver to.
        let _ = msg.matched.send(matches);
    }
}

#[cfg(test)]
mod tests {
    use protocol::{EventId, Filter, NewEvent, Profile, Scope, SubName, Topic};
    use storage::StoredEvent;

    use super::*;
    use crate::delivery::{FrameFormat, SessionId, Subscriber, Target, Transport};

    fn subscriber(session: SessionId, generation: u64, filter: Filter) -> SharedSubscriber {
        Arc::new(Subscriber {
            key: SubKey { session, generation },
            sub: SubName::default_name(),
            filter,
            format: FrameFormat { transport: Transport::WebSocket, profile: Profile::Hub },
            target: Target::Wake(Arc::new(tokio::sync::Notify::new())),
        })
    }

    /// The dispatcher sorts a batch's matches by key: one event's matches from one room already come so, and its
    /// sort of a thousand connections only checks the order.
    #[actix_web::test]
    async fn one_events_matches_come_in_key_order() {
        let room = TopicRoom::new(TopicPattern::parse("t").unwrap()).start();
        let sessions: Vec<SessionId> = (0..64).map(|_| SessionId::new()).collect();
        // Joined in an order unlike the keys', filtered and not.
        for (n, session) in sessions.iter().enumerate().rev() {
            let filter = if n % 2 == 0 { Filter::default() } else { Filter::try_from([("project_id", "p1")]).unwrap() };
            for generation in [2, 1] {
                let (joined, ack) = oneshot::channel();
                room.do_send(AddSubscriber { subscriber: subscriber(*session, generation, filter.clone()), joined });
                ack.await.unwrap();
            }
        }
        let new = NewEvent::new(
            Topic::parse("t").unwrap(),
            Scope::try_from([("project_id", "p1")]).unwrap(),
            Default::default(),
        );
        let events: Arc<[SharedEvent]> =
            Arc::from(vec![Arc::new(StoredEvent::from_new(EventId::new(1).unwrap(), chrono::Utc::now(), new))]);
        let (matched, answer) = oneshot::channel();
        room.do_send(Route { events, indices: vec![0], matched });
        let keys: Vec<SubKey> = answer.await.unwrap().iter().map(|m| m.key).collect();
        let unfiltered: Vec<SubKey> =
            keys.iter().copied().filter(|k| sessions.iter().position(|s| *s == k.session).unwrap() % 2 == 0).collect();
        let filtered: Vec<SubKey> =
            keys.iter().copied().filter(|k| sessions.iter().position(|s| *s == k.session).unwrap() % 2 == 1).collect();
        assert_eq!(keys.len(), 128);
        assert!(unfiltered.is_sorted() && filtered.is_sorted(), "{keys:?}");
    }
}
