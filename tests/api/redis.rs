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
