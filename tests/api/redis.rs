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
