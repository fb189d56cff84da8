//! What is Redis' own: the publisher crate's Redis sink and start-up errors. The guarantees every backend gives
//! (cluster, faults, resume) are in `backends.rs`.

use hub::Application;
use hub::settings::{Backend, Settings};
use publisher::events::{ProjectId, RunEvent, RunId, RunScope, RunStatus};
use publisher::{Publisher, RedisSink};

use crate::helpers::{ids, spawn_redis_hub};

#[actix_web::test]
async fn the_publisher_crates_redis_sink_reaches_subscribers_of_every_hub() {
    let redis = test_redis!();
    let hub = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let mut client = hub.ws("/ws?topics=run.events&project_id=p1").await;
    client.expect("subscribed").await;
    let publisher = Publisher::new(RedisSink::connect(&redis.url, &redis.prefix).await.unwrap());

    let mut event =
        RunEvent::new(RunScope::new(ProjectId::new("p1").unwrap(), RunId::new("r1").unwrap()), RunStatus::Failed);
    event.details.insert("api_key".into(), "sk_live_abcdefghijklmnop1234".into());
    let published = publisher.publish(event).await.unwrap();

    let got = client.events(1).await;
    assert_eq!(Some(ids(&got)), published.ids.map(|ids| ids.iter().map(|id| id.get()).collect()));
    assert_eq!(got[0]["payload"]["details"]["api_key"], "[REDACTED]");
    assert_eq!(got[0]["key"], "run:r1");
}

#[actix_web::test]
async fn an_unreachable_or_malformed_redis_url_is_a_clear_start_up_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    for (url, says) in [
        (format!("redis://127.0.0.1:{closed}"), "cannot open the Redis event log"),
        ("http://nope".into(), "REDIS_URL"),
    ] {
        let settings = Settings {
            bind: "127.0.0.1:0".into(),
            backend: Some(Backend::Redis),
            redis_url: Some(url.clone()),
            // Unreachable is waited for at start-up (HUB_START_TIMEOUT); a second is less than one retry.
            start_timeout: std::time::Duration::from_secs(1),
            ..Settings::default()
        };
        let error = Application::build(settings).await.err().expect("the hub refuses to start");
        let text = format!("{error:#}");
        assert!(text.contains(says), "{url}: {text}");
    }
}

/// How many times the Redis at `url` ran each of `commands` since its statistics were reset.
async fn command_calls(url: &str, commands: &[&str]) -> Vec<u64> {
    let mut connection = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await.unwrap();
    commands
        .iter()
        .map(|command| {
            stats
                .lines()
                .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
                .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
        })
        .collect()
}

/// A hub delivers what its blocking read returned: each live event costs the following hub one `XREAD`, not an
/// `XREAD` and then a read of the log.
#[actix_web::test]
async fn a_live_event_is_delivered_from_the_blocking_read_without_reading_the_log_again() {
    let server = throwaway_redis!();
    let hub = spawn_redis_hub(&server.url(), "reads", |_| {}).await;
    let mut client = hub.ws("/ws?topics=*").await;
    client.expect("subscribed").await;
    let mut connection = redis::Client::open(server.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut connection).await.unwrap();

    let mut published = Vec::new();
    for n in 0..50 {
        published.extend(hub.publish(crate::helpers::event("a", serde_json::json!({}), n)).await);
        // One event per wake-up of the storage actor.
        assert_eq!(ids(&client.events(1).await), published[published.len() - 1..]);
    }
    let [scripts, xreads] = command_calls(&server.url(), &["evalsha", "xread"]).await[..] else { unreachable!() };

    // 50 appends are scripts; a read of the log per wake-up would be 50 more.
    assert!(scripts < 60, "{scripts} scripts ran for 50 appends");
    assert!(xreads >= 50, "{xreads} blocking reads for 50 wake-ups");
}

/// A log of the first release (events stored as published, re-serialized by every reader) is read as it is and
/// written in its format until `hub migrate` moves it to storing envelopes; from then on a reader's JSON is the
/// stored text, `ts` being the entry's time.
#[actix_web::test]
async fn a_first_release_log_is_read_and_kept_until_hub_migrate_moves_it_to_stored_envelopes() {
    let redis = test_redis!();
    let (meta, stream) = (format!("{{{}}}:meta", redis.prefix), format!("{{{}}}:log", redis.prefix));
    let mut connection =
        redis::Client::open(redis.url.as_str()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let () = redis::pipe()
        .cmd("HSET")
        .arg(&meta)
        .arg("head")
        .arg(1)
        .arg("epoch")
        .arg(1)
        .ignore()
        .cmd("XADD")
        .arg(&stream)
        .arg("1-0")
        .arg("t")
        .arg(now)
        .arg("e")
        .arg(r#"{"topic":"a","scope":{},"payload":{"n":1}}"#)
        .ignore()
        .query_async(&mut connection)
        .await
        .unwrap();
    let stored_fields = |id: u64| {
        let mut connection = connection.clone();
        let stream = stream.clone();
        async move {
            let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(format!("{id}-0"))
                .arg(format!("{id}-0"))
                .query_async(&mut connection)
                .await
                .unwrap();
            entries[0].1.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>()
        }
    };

    let hub = spawn_redis_hub(&redis.url, &redis.prefix, |_| {}).await;
    let mut client = hub.ws("/ws?topics=*&since=0").await;
    client.expect("subscribed").await;
    let old = client.events(1).await;
    client.expect("live").await;
    let before = hub.publish(crate::helpers::event("a", serde_json::json!({}), 2)).await;
    assert_eq!(stored_fields(before[0]).await, ["t", "e"], "kept in the first release's format");

    let migrate = tokio::process::Command::new(crate::process::hub_binary())
        .arg("migrate")
        .env_clear()
        .env("REDIS_URL", &redis.url)
        .env("HUB_REDIS_PREFIX", &redis.prefix)
        .output()
        .await
        .unwrap();
    assert!(migrate.status.success(), "hub migrate failed: {}", String::from_utf8_lossy(&migrate.stderr));
    let after = hub.publish(crate::helpers::event("a", serde_json::json!({}), 3)).await;
    let live = client.events(2).await;

    assert_eq!((ids(&old), old[0]["payload"]["n"].as_u64()), (vec![1], Some(1)));
    assert_eq!((ids(&live), after[0]), (vec![2, 3], 3));
    assert_eq!(stored_fields(3).await, ["t", "j"], "stored as the envelope");
    let entries: Vec<(String, std::collections::HashMap<String, String>)> =
        redis::cmd("XRANGE").arg(&stream).arg("3-0").arg("3-0").query_async(&mut connection).await.unwrap();
    let (millis, json) = (&entries[0].1["t"], &entries[0].1["j"]);
    let stored: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut delivered = live[1].as_object().unwrap().clone();
    delivered.retain(|field, _| field != "type" && field != "sub");
    assert_eq!(stored, serde_json::Value::Object(delivered), "the stored text is the envelope the subscriber got");
    let ts = chrono::DateTime::from_timestamp_millis(millis.parse().unwrap()).unwrap();
    assert_eq!(stored["ts"], ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
}

/// A service writing through the publisher crate's Redis sink follows the hubs' topic policies: a flood of run logs
/// past their cap never pushes out an audit event, and a reader of the audit topic is not reset.
#[actix_web::test]
async fn the_redis_sink_follows_the_topic_policies_the_hubs_stored() {
    let redis = test_redis!();
    let policies = "[[policy]]\ntopics = [\"run.logs\"]\nmax_events = 10\n[[policy]]\ntopics = [\"audit.*\"]";
    let hub = spawn_redis_hub(&redis.url, &redis.prefix, |s| {
        s.topic_policies = Some(policies.into());
        s.recent_events = 0;
    })
    .await;
    let publisher = Publisher::new(RedisSink::connect(&redis.url, &redis.prefix).await.unwrap());
    let new = |topic: &str| {
        let payload = serde_json::json!({"n": 1}).as_object().cloned().unwrap();
        protocol::NewEvent::new(protocol::Topic::parse(topic).unwrap(), protocol::Scope::default(), payload)
    };

    let audit = publisher.publish(new("audit.login")).await.unwrap().ids.unwrap()[0].get();
    for _ in 0..5 {
        publisher.publish_batch((0..100).map(|_| new("run.logs"))).await.unwrap();
    }
    let (_, logs) = hub.get_json("/api/events?topics=run.logs&after=0&limit=1000&wait=0").await;
    let (_, audits) = hub.get_json(&format!("/api/events?topics=audit.*&after={}&wait=0", audit - 1)).await;

    assert!(logs["events"].as_array().unwrap().len() < 110, "the sink's logs are capped in their own stream: {logs}");
    assert_eq!(ids(audits["events"].as_array().unwrap()), [audit], "{audits}");
    assert!(audits["reset"].is_null(), "{audits}");
}
