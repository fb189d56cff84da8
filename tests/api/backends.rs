//! One suite for every backend: the cluster, fault and resume guarantees of the contract, written once and run
//! against each event log. `every_backend!` runs a test on memory, PostgreSQL, Redis and NATS; `shared_backends!`
//! on the logs that several hubs share (memory is one process). A backend added later gets a `LogKind` and its arms in
//! `TestLog`, and must then pass every test here. Tests are named `backends::<guarantee>::<backend>`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::future::join_all;
use hub::settings::{Backend, Settings};
use serde_json::{Value, json};

use crate::db::{Cluster, TestDb};
use crate::helpers::{TestHub, WsClient, event, ids, try_spawn_hub, ws_at};
use crate::kv::{RedisServer, TestRedis};
use crate::natsd::{NatsCluster, TestStream};
use crate::process::HubProcess;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Memory,
    Postgres,
    Redis,
    Nats,
}

/// Where a test's log lives: nothing (memory), a fresh database or key prefix on the shared server, or a server of
/// the test's own that it may stop and start.
enum Place {
    Memory,
    Database(TestDb),
    Cluster(Cluster),
    Prefix(TestRedis),
    Server(RedisServer),
    Stream(TestStream),
    NatsServer(NatsCluster),
}

/// An event log of the test's own on one backend, and the hubs that share it.
pub struct TestLog {
    pub kind: LogKind,
    place: Place,
}

impl TestLog {
    /// A fresh log on the shared server of `kind`, or `None` (the test is skipped) when that server is missing and
    /// not required.
    pub async fn create(kind: LogKind) -> Option<Self> {
        let place = match kind {
            LogKind::Memory => Place::Memory,
            LogKind::Postgres => Place::Database(TestDb::create().await?),
            LogKind::Redis => Place::Prefix(TestRedis::create().await?),
            LogKind::Nats => Place::Stream(TestStream::create().await?),
        };
        Some(Self { kind, place })
    }

    /// A log on a server of the test's own, which the test may stop and start again.
    pub async fn throwaway(kind: LogKind) -> Option<Self> {
        let place = match kind {
            LogKind::Memory => Place::Memory,
            LogKind::Postgres => match Cluster::start().await {
                Some(cluster) => Place::Cluster(cluster),
                None if std::env::var("HUB_REQUIRE_PG").is_ok() => panic!("HUB_REQUIRE_PG=1 but no initdb"),
                None => return None,
            },
            LogKind::Redis => match RedisServer::start().await {
                Some(server) => Place::Server(server),
                None if crate::kv::required() => panic!("HUB_REQUIRE_REDIS=1 but no redis-server"),
                None => return None,
            },
            LogKind::Nats => match NatsCluster::start(1).await {
                Some(server) => Place::NatsServer(server),
                None if crate::natsd::required() => panic!("HUB_REQUIRE_NATS=1 but no nats-server"),
                None => return None,
            },
        };
        Some(Self { kind, place })
    }

    /// What `/api/health/pubsub` names as the provider.
    pub fn provider(&self) -> &'static str {
        match self.kind {
            LogKind::Memory => "memory",
            LogKind::Postgres => "postgres",
            LogKind::Redis => "redis",
            LogKind::Nats => "nats",
        }
    }

    /// Whether the log's events outlive a restart of its server (Redis on these machines keeps nothing on disk;
    /// JetStream keeps its file store).
    pub fn survives_a_server_restart(&self) -> bool {
        matches!(self.kind, LogKind::Postgres | LogKind::Nats)
    }

    /// The environment that points a hub (in process or not) at this log.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        match &self.place {
            Place::Memory => vec![("HUB_BACKEND", "memory".into())],
            Place::Database(db) => pg_env(db.url.clone()),
            Place::Cluster(cluster) => pg_env(cluster.url("postgres")),
            Place::Prefix(redis) => redis_env(redis.url.clone(), redis.prefix.clone()),
            Place::Server(server) => redis_env(server.url(), "throwaway".into()),
            Place::Stream(stream) => nats_env(stream.url.clone(), stream.name.clone()),
            Place::NatsServer(server) => nats_env(server.urls(), "throwaway".into()),
        }
    }

    /// Starts a hub in this process on the log, adjusted by `configure`.
    pub async fn spawn_hub(&self, configure: impl FnOnce(&mut Settings)) -> TestHub {
        self.try_spawn_hub(configure).await.unwrap_or_else(|e| panic!("the hub starts: {e}"))
    }

    /// As [`TestLog::spawn_hub`], answering why the hub refused to start.
    pub async fn try_spawn_hub(&self, configure: impl FnOnce(&mut Settings)) -> Result<TestHub, String> {
        let on_log = self.settings();
        try_spawn_hub(move |s| {
            on_log(s);
            configure(s);
        })
        .await
    }

    /// What points a hub's settings at this log (owned: it borrows nothing of the log).
    pub fn settings(&self) -> impl FnOnce(&mut Settings) + 'static {
        let (kind, env) = (self.kind, self.env());
        let value = move |name: &str| env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
        move |s: &mut Settings| match kind {
            LogKind::Memory => s.backend = Some(Backend::Memory),
            LogKind::Postgres => {
                s.backend = Some(Backend::Postgres);
                s.database_url = value("DATABASE_URL");
                s.db_pool_size = 3;
                s.inbox_poll = Duration::from_millis(50);
            }
            LogKind::Redis => {
                s.backend = Some(Backend::Redis);
                s.redis_url = value("REDIS_URL");
                s.redis_prefix = value("HUB_REDIS_PREFIX").expect("a prefix");
            }
            LogKind::Nats => {
                s.backend = Some(Backend::Nats);
                s.nats_url = value("NATS_URL");
                s.nats_stream = value("HUB_NATS_STREAM").expect("a stream");
            }
        }
    }

    /// Starts the hub binary as a process of its own on the log (for SIGKILL).
    pub async fn spawn_process(&self) -> HubProcess {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        HubProcess::start(&env).await
    }

    /// Closes the connections the test's hubs follow the log on (the PostgreSQL listener, the Redis blocking
    /// reader), as a network blip or a proxy would; returns how many were closed.
    pub async fn kill_feeds(&self) -> usize {
        match &self.place {
            Place::Database(db) => {
                let pool = db.pool().await;
                let killed: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = current_database() AND application_name = 'realtime-hub-listener') k",
                )
                .fetch_one(&pool)
                .await
                .expect("the listeners are terminated");
                pool.close().await;
                killed as usize
            }
            Place::Prefix(redis) => redis.kill_readers().await,
            _ => panic!("{:?}: no shared feed to kill here", self.kind),
        }
    }

    /// Stops the log's own server (a PostgreSQL fast shutdown; Redis killed, its data gone).
    pub async fn stop_server(&mut self) {
        match &mut self.place {
            Place::Cluster(cluster) => cluster.stop().await,
            Place::Server(server) => server.stop().await,
            Place::NatsServer(server) => server.nodes[0].kill().await,
            _ => panic!("{:?}: only a throwaway server is stopped", self.kind),
        }
    }

    pub async fn start_server(&mut self) {
        match &mut self.place {
            Place::Cluster(cluster) => cluster.start_again().await,
            Place::Server(server) => server.start_again().await,
            Place::NatsServer(server) => server.nodes[0].start().await,
            _ => panic!("{:?}: only a throwaway server is started", self.kind),
        }
    }
}

fn pg_env(url: String) -> Vec<(&'static str, String)> {
    vec![("HUB_BACKEND", "postgres".into()), ("DATABASE_URL", url), ("HUB_DB_POOL_SIZE", "3".into())]
}

fn redis_env(url: String, prefix: String) -> Vec<(&'static str, String)> {
    vec![("HUB_BACKEND", "redis".into()), ("REDIS_URL", url), ("HUB_REDIS_PREFIX", prefix)]
}

fn nats_env(url: String, stream: String) -> Vec<(&'static str, String)> {
    vec![("HUB_BACKEND", "nats".into()), ("NATS_URL", url), ("HUB_NATS_STREAM", stream)]
}

/// Runs the test body once per backend, each as `<test>::<backend>`, with `$log` a fresh [`TestLog`].
macro_rules! backend_tests {
    ($create:ident [$($backend:ident => $kind:ident),*] $(#[$doc:meta])* async fn $name:ident($log:ident) $body:block) => {
        $(#[$doc])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $backend() {
                    #[allow(unused_mut)]
                    let Some(mut $log) = TestLog::$create(LogKind::$kind).await else {
                        return eprintln!("skipped: no {:?} server", LogKind::$kind);
                    };
                    $body
                }
            )*
        }
    };
}

/// A test of a guarantee every backend gives, one hub at a time.
macro_rules! every_backend {
    ($($test:tt)*) => {
        backend_tests!(create [memory => Memory, postgres => Postgres, redis => Redis, nats => Nats] $($test)*);
    };
}

/// A test of a guarantee across several hubs sharing one log.
macro_rules! shared_backends {
    ($($test:tt)*) => { backend_tests!(create [postgres => Postgres, redis => Redis, nats => Nats] $($test)*); };
}

/// A test that stops and starts the log's own server.
macro_rules! restartable_backends {
    ($($test:tt)*) => { backend_tests!(throwaway [postgres => Postgres, redis => Redis, nats => Nats] $($test)*); };
}

/// Reads frames until every payload marker of `expected` has arrived (failing on a timeout or a reset), then checks
/// that nothing more comes; returns the event frames in arrival order.
pub async fn events_with_markers(client: &mut WsClient, expected: &BTreeSet<u64>) -> Vec<Value> {
    let mut got = Vec::new();
    let mut seen = BTreeSet::new();
    while !expected.is_subset(&seen) {
        let frame = client.next_json().await;
        assert_ne!(frame["type"], "reset", "nothing was lost, yet: {frame}");
        if frame["type"] == "event" {
            seen.insert(frame["payload"]["n"].as_u64().unwrap());
            got.push(frame);
        }
    }
    client.expect_silence(Duration::from_millis(300)).await;
    got
}

/// Asserts that `got` holds each marker of `expected` once, in strictly increasing id order.
pub fn assert_exactly_once_in_order(which: &str, got: &[Value], expected: &BTreeSet<u64>) {
    let got_ids = ids(got);
    assert!(got_ids.windows(2).all(|w| w[0] < w[1]), "{which}: ids not strictly increasing: {got_ids:?}");
    let markers: Vec<u64> = got.iter().map(|e| e["payload"]["n"].as_u64().unwrap()).collect();
    let unique: BTreeSet<u64> = markers.iter().copied().collect();
    assert_eq!(unique.len(), markers.len(), "{which}: duplicates");
    assert_eq!(&unique, expected, "{which}: missing or extra events");
}

shared_backends! {
    async fn an_event_published_on_one_hub_reaches_a_subscriber_on_another_with_an_integer_id(log) {
        let hub_a = log.spawn_hub(|_| {}).await;
        let hub_b = log.spawn_hub(|_| {}).await;
        let mut client = hub_a.ws("/ws?topics=run.*&project_id=p1").await;
        client.expect("subscribed").await;

        let published = hub_b.publish(event("run.events", json!({"project_id":"p1"}), 1)).await;

        let got = client.events(1).await;
        assert_eq!(ids(&got), published);
        assert_eq!(got[0]["payload"], json!({"n": 1}));
        assert!(got[0]["id"].is_u64() && published[0] < 1 << 53, "ids are integers exact in JavaScript: {}", got[0]);
        let (_, health) = hub_a.get_json("/api/health/pubsub").await;
        assert_eq!(health["provider"], log.provider());
        assert_eq!(health["log"]["head"], published[0]);
    }
}

shared_backends! {
    /// Eight publishers on two hubs while subscribers on both hubs listen: each subscriber gets every matching event
    /// once, in id order, and the unfiltered ones see the ids without a gap.
    async fn eight_concurrent_publishers_on_two_hubs_lose_nothing_and_keep_order_on_every_hub(log) {
        let hub_a = log.spawn_hub(|s| s.workers = Some(2)).await;
        let hub_b = log.spawn_hub(|s| s.workers = Some(2)).await;
        let mut subscribers = vec![
            hub_a.ws("/ws?topics=*").await,
            hub_a.ws("/ws?topics=chat:*,run.logs&project_id=p1").await,
            hub_b.ws("/ws?topics=*").await,
            hub_b.ws("/ws?topics=chat:*,run.logs&project_id=p1").await,
        ];
        for client in &mut subscribers {
            client.expect("subscribed").await;
        }

        let publishers = (0..8u64).map(|p| {
            let hub = if p % 2 == 0 { &hub_a } else { &hub_b };
            async move {
                for i in 0..30u64 {
                    let n = 1000 * (p + 1) + i;
                    let project = if i % 3 == 0 { "p1" } else { "p2" };
                    let topic = if i % 2 == 0 { "chat:1" } else { "run.logs" };
                    hub.publish(json!([
                        event(topic, json!({"project_id": project}), n),
                        event("other", json!({}), n + 500)
                    ]))
                    .await;
                }
            }
        });
        join_all(publishers).await;

        let all: BTreeSet<u64> = (0..8u64)
            .flat_map(|p| (0..30).flat_map(move |i| [1000 * (p + 1) + i, 1000 * (p + 1) + i + 500]))
            .collect();
        let p1: BTreeSet<u64> = all.iter().copied().filter(|n| n % 1000 < 500 && (n % 1000) % 3 == 0).collect();
        for (which, client) in subscribers.iter_mut().enumerate() {
            let expected = if which % 2 == 0 { &all } else { &p1 };
            let got = events_with_markers(client, expected).await;
            assert_exactly_once_in_order(&format!("subscriber {which}"), &got, expected);
            if which % 2 == 0 {
                let got_ids = ids(&got);
                assert!(got_ids.windows(2).all(|w| w[1] == w[0] + 1), "subscriber {which}: ids have gaps");
            }
        }
    }
}

// NATS 2.9 cannot close one client's connection from outside: its feed is tested by killing the server it is
// connected to (`nats.rs`).
backend_tests! {
    create [postgres => Postgres, redis => Redis]
    /// The connection a hub follows the log on (PostgreSQL's listener, Redis' blocking reader) killed three times
    /// during a burst: every event still arrives once, in order.
    async fn killing_the_feed_connection_during_a_burst_loses_nothing(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let mut client = hub.ws("/ws?topics=a").await;
        client.expect("subscribed").await;

        let mut expected = Vec::new();
        for round in 0..20u64 {
            let batch: Vec<Value> = (0..10).map(|i| event("a", json!({}), round * 10 + i)).collect();
            expected.extend(hub.publish(json!(batch)).await);
            if round % 5 == 2 {
                // Wait for the (re)opened feed, then kill it mid-burst.
                hub.wait_ready(200, Duration::from_secs(10)).await;
                assert_eq!(log.kill_feeds().await, 1, "the one feed connection is killed");
            }
        }
        hub.wait_ready(200, Duration::from_secs(10)).await;

        let got = client.events(expected.len()).await;
        assert_eq!(ids(&got), expected);
        client.expect_silence(Duration::from_millis(300)).await;
    }
}

/// A hub process SIGKILLed mid-stream: its client resumes on the other hub from the last id it saw and gets exactly
/// the rest, including what was published while it was away. Shared with the three-node NATS cluster test.
pub async fn assert_a_client_of_a_sigkilled_hub_resumes_on_the_other(hub_a: HubProcess, hub_b: &TestHub) {
    let mut client = ws_at(hub_a.port, "/ws?topics=run.logs").await;
    client.expect("subscribed").await;
    let mut published = Vec::new();
    for n in 0..10 {
        published.extend(hub_b.publish(event("run.logs", json!({"run_id":"r1"}), n)).await);
    }
    let before = client.events(5).await;
    let last_seen = *ids(&before).last().unwrap();

    hub_a.stop_and_read_output().await; // SIGKILL
    for n in 10..20 {
        published.extend(hub_b.publish(event("run.logs", json!({"run_id":"r1"}), n)).await);
    }
    let mut resumed = hub_b.ws(&format!("/ws?topics=run.logs&since={last_seen}")).await;
    resumed.expect("subscribed").await;
    let rest = resumed.events(published.len() - 5).await;
    resumed.expect("live").await;

    assert_eq!(ids(&rest), published[5..].to_vec());
}

shared_backends! {
    async fn a_client_of_a_sigkilled_hub_resumes_on_the_other_hub_without_loss(log) {
        let hub_a = log.spawn_process().await;
        let hub_b = log.spawn_hub(|_| {}).await;
        assert_a_client_of_a_sigkilled_hub_resumes_on_the_other(hub_a, &hub_b).await;
    }
}

every_backend! {
    /// Each transport resumes from a position: a WebSocket with `since`, SSE with `Last-Event-ID`, long-poll with
    /// `after`. Each gets exactly the matching events after it, then what is published live.
    async fn every_transport_resumes_with_exactly_the_events_after_its_position(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let seen = hub.publish(json!([event("chat:1", json!({}), 1), event("chat:2", json!({}), 2)])).await;
        let missed = hub
            .publish(json!([event("chat:1", json!({}), 3), event("other", json!({}), 4), event("chat:2", json!({}), 5)]))
            .await;
        let position = seen[1];

        let mut ws = hub.ws(&format!("/ws?topics=chat:*&since={position}")).await;
        ws.expect("subscribed").await;
        let ws_replayed = ws.events(2).await;
        ws.expect("live").await;
        let mut sse = hub.sse("/sse?topics=chat:*", &[("Last-Event-ID", &position.to_string())]).await;
        let sse_replayed = [sse.next_event().await, sse.next_event().await];
        let (_, poll) = hub.get_json(&format!("/api/events?topics=chat:*&after={position}&wait=0")).await;
        let live = hub.publish(event("chat:3", json!({}), 6)).await;

        let wanted = vec![missed[0], missed[2]];
        assert_eq!(ids(&ws_replayed), wanted);
        assert_eq!(ids(&ws.events(1).await), live);
        let sse_ids: Vec<u64> = sse_replayed.iter().map(|b| b.id.as_ref().unwrap().parse().unwrap()).collect();
        assert_eq!(sse_ids, wanted);
        assert_eq!(sse.next_event().await.id, Some(live[0].to_string()));
        assert_eq!(ids(poll["events"].as_array().unwrap()), wanted);
        assert_eq!(poll["next_after"], missed[2]);
        assert_eq!(poll["reset"], Value::Null);
    }
}

every_backend! {
    async fn a_resume_point_older_than_the_retention_gets_a_reset_on_every_transport(log) {
        let hub = log
            .spawn_hub(|s| {
                s.retention = Some(Duration::from_millis(500));
                s.retention_interval = Duration::from_millis(100);
            })
            .await;
        let old =
            hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2), event("a", json!({}), 3)])).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let fresh = hub.publish(event("a", json!({}), 4)).await;

        let mut client = hub.ws(&format!("/ws?topics=a&since={}", old[0])).await;
        client.expect("subscribed").await;
        let reset = client.expect("reset").await;
        client.expect("live").await;
        let mut sse = hub.sse("/sse?topics=a", &[("Last-Event-ID", &old[0].to_string())]).await;
        let sse_reset = sse.next_event().await;
        let (_, poll) = hub.get_json(&format!("/api/events?topics=a&after={}&wait=0", old[0])).await;

        assert_eq!(reset["reason"], "history_truncated");
        assert_eq!(reset["earliest_id"], fresh[0]);
        assert_eq!(reset["head"], fresh[0]);
        assert_eq!(sse_reset.event.as_deref(), Some("reset"));
        assert_eq!(sse_reset.json()["earliest_id"], fresh[0]);
        assert_eq!(poll["reset"]["reason"], "history_truncated", "{poll}");
    }
}

every_backend! {
    async fn replay_reads_the_log_with_the_subscription_filter(log) {
        let hub = log.spawn_hub(|s| s.scope_keys = vec!["color".into()]).await;
        let mut wanted = Vec::new();
        for n in 0..30u64 {
            let project = if n % 3 == 0 { "p1" } else { "p2" };
            let topic = if n % 2 == 0 { "run.logs" } else { "audit_log.x" };
            let id = hub.publish(event(topic, json!({"project_id": project, "color": "blue"}), n)).await[0];
            if project == "p1" {
                wanted.push(id);
            }
        }

        let mut client = hub.ws("/ws?topics=run.*,audit_log.*&project_id=p1&color=blue&since=0").await;
        client.expect("subscribed").await;

        assert_eq!(ids(&client.events(wanted.len()).await), wanted);
        client.expect("live").await;
        let mut underscore = hub.ws("/ws?topics=auditXlog.*&since=0").await;
        underscore.expect("subscribed").await;
        underscore.expect("live").await;
    }
}

restartable_backends! {
    /// A long-poll waiting while the log's server restarts is answered by the next event, judged from where it had
    /// read: with nothing more when the server kept its log, with a reset (and no event) when it came back empty,
    /// and the new event from the position the reset gives.
    async fn a_long_poll_waiting_through_the_logs_server_restart_gets_the_next_event_or_a_reset(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let before = hub.publish(event("a", json!({}), 1)).await;
        let from_before = format!("/api/events?topics=a&after={}&wait=25", before[0]);
        let waiting = hub.get_json(&from_before);
        let restart_then_publish = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            log.stop_server().await;
            hub.wait_ready(503, Duration::from_secs(10)).await;
            log.start_server().await;
            hub.wait_ready(200, Duration::from_secs(15)).await;
            hub.publish(event("a", json!({}), 2)).await
        };
        let ((status, answer), after) = tokio::join!(waiting, restart_then_publish);

        assert_eq!(status, 200, "{answer}");
        if log.survives_a_server_restart() {
            assert_eq!(answer["reset"], Value::Null, "nothing was lost: {answer}");
            assert_eq!(ids(answer["events"].as_array().unwrap()), after);
        } else {
            assert_eq!(answer["reset"]["reason"], "history_truncated", "{answer}");
            assert_eq!(answer["events"], json!([]), "{answer}");
            let (_, next) = hub.get_json(&format!("/api/events?topics=a&after={}&wait=5", answer["next_after"])).await;
            assert_eq!(ids(next["events"].as_array().unwrap()), after, "{next}");
        }
    }
}

restartable_backends! {
    /// The log's server stops: the hub turns unready and refuses publishes with 503 rather than accept what it
    /// cannot store; it recovers by itself. What the server kept is delivered with ids continuing; what it lost is
    /// said with a reset, and ids never go back under a client that holds old ones.
    async fn the_logs_server_restarting_makes_the_hub_unready_then_it_recovers_and_never_reuses_ids(log) {
        let hub = log.spawn_hub(|_| {}).await;
        let mut live = hub.ws("/ws?topics=a").await;
        live.expect("subscribed").await;
        let mut sse = hub.sse("/sse?topics=a", &[]).await;
        let before = hub.publish(json!([event("a", json!({}), 1), event("a", json!({}), 2)])).await;
        assert_eq!(ids(&live.events(2).await), before);
        assert_eq!(sse.next_event().await.id, Some(before[0].to_string()));
        assert_eq!(sse.next_event().await.id, Some(before[1].to_string()));

        log.stop_server().await;
        hub.wait_ready(503, Duration::from_secs(10)).await;
        let refused = hub.publish_raw(event("a", json!({}), 3).to_string()).await;
        assert_eq!(refused.status(), 503, "no event is accepted that the log cannot hold");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
        log.start_server().await;
        hub.wait_ready(200, Duration::from_secs(15)).await;

        if !log.survives_a_server_restart() {
            let reset = live.expect("reset").await;
            assert_eq!(reset["reason"], "history_truncated");
            assert!(reset["earliest_id"].as_u64().unwrap() > before[1], "a new epoch starts above old ids: {reset}");
            assert_eq!(sse.next_event().await.event.as_deref(), Some("reset"));
        }
        let after = hub.publish(json!([event("a", json!({}), 4), event("a", json!({}), 5)])).await;
        assert_eq!(ids(&live.events(2).await), after);
        assert_eq!(sse.next_event().await.id, Some(after[0].to_string()));
        if log.survives_a_server_restart() {
            assert_eq!(after[0], before[1] + 1, "ids continue densely after the restart");
        } else {
            assert!(after[0] > before[1], "ids never go back: {after:?} after {before:?}");
            let (_, poll) = hub.get_json(&format!("/api/events?topics=a&after={}&wait=0", before[0])).await;
            assert_eq!(poll["reset"]["reason"], "history_truncated", "{poll}");
        }
    }
}

restartable_backends! {
    /// A hub started while its backend is down (a cluster still forming, a database that starts with it) binds at
    /// once: `/healthz` 200, `/readyz` and the routes 503 with the reason; it keeps trying, and once the backend
    /// answers it serves as any hub. Past `HUB_START_TIMEOUT` it gives up with the reason.
    async fn a_hub_started_before_its_backend_waits_for_it_then_serves(log) {
        log.stop_server().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let on_log = log.settings();
        let starting = crate::helpers::try_spawn_hub(move |s| {
            on_log(s);
            s.bind = format!("127.0.0.1:{port}");
        });
        let http = reqwest::Client::new();
        let get = |path: &'static str| {
            let http = http.clone();
            async move {
                let response = http.get(format!("http://127.0.0.1:{port}{path}")).send().await.ok()?;
                let status = response.status().as_u16();
                Some((status, response.json::<Value>().await.unwrap_or(Value::Null)))
            }
        };
        let waiting = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            let healthz = loop {
                if let Some(answer) = get("/healthz").await {
                    break answer;
                }
                assert!(tokio::time::Instant::now() < deadline, "the waiting hub never answered /healthz");
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let readyz = get("/readyz").await;
            let publish = get("/api/events?topics=a&after=0").await;
            log.start_server().await;
            (healthz, readyz, publish)
        };
        let (hub, (healthz, readyz, publish)) = tokio::join!(starting, waiting);
        let hub = hub.expect("the hub starts once its backend answers");
        let published = hub.publish(event("a", json!({}), 1)).await;

        assert_eq!(healthz.0, 200, "{healthz:?}");
        let (status, body) = readyz.expect("answered");
        assert_eq!(status, 503, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("waiting for its backend"), "{body}");
        assert_eq!(publish.map(|(status, _)| status), Some(503));
        assert_eq!(published.len(), 1);

        log.stop_server().await;
        let started = tokio::time::Instant::now();
        let on_log = log.settings();
        let refused = crate::helpers::try_spawn_hub(move |s| {
            on_log(s);
            s.start_timeout = Duration::from_secs(3);
        })
        .await;
        let waited = started.elapsed();
        assert!(refused.is_err(), "a backend that never comes is given up on");
        assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(10), "gave up after {waited:?}");
    }
}
