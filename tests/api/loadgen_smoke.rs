//! A small run of every load-generator scenario: zero loss and zero duplicates (speed is measured by the
//! loadgen binary itself, in docs/PERFORMANCE.md, never in tests).

use std::time::Duration;

use loadgen::client::{Peer, Transport};
use loadgen::scenarios::catchup::CatchupConfig;
use loadgen::scenarios::churn::ChurnConfig;
use loadgen::scenarios::fanout::FanoutConfig;
use loadgen::scenarios::idle::{IdleConfig, SubscribeBy};
use loadgen::scenarios::publish::{PublishConfig, Via};
use loadgen::{Report, scenarios};

use crate::helpers::{spawn_hub, spawn_pg_hub};

fn assert_clean(report: &Report) {
    assert_eq!((report.loss, report.duplicates), (0, 0), "{}", report.summary());
}

fn fanout(subscribe_hub: String, publish_hub: String) -> FanoutConfig {
    FanoutConfig {
        peer: Peer::Hub,
        transport: Transport::Ws,
        subscribe_hub,
        publish_hub,
        subscribers: 20,
        events: 300,
        rate: 3000,
        topics: 2,
        projects: 3,
        payload_bytes: 100,
        batch: 10,
        publishers: 3,
        idempotent: false,
        hub_pids: vec![std::process::id()],
        drain: Duration::from_secs(5),
    }
}

#[actix_web::test]
async fn the_fanout_scenario_delivers_every_event_once() {
    let hub = spawn_hub(|s| s.workers = Some(2)).await;
    let url = hub.url("");

    let report = scenarios::fanout::run(fanout(url.clone(), url)).await.unwrap();

    assert_clean(&report);
    // Subscriber k gets the events of its topic (k % 2) and project (k % 3): 300 / 6 = 50 each.
    assert_eq!(report.deliveries, Some(20 * 50));
    assert!(report.latency_ms.is_some() && report.server_cpu_s.is_some());
    // Measured, and within the deliveries' latencies.
    let (first, max) = (report.first_arrival_ms.unwrap(), report.latency_ms.unwrap().max);
    assert!(0.0 < first && first <= max, "first arrival {first} ms, slowest delivery {max} ms");
}

#[actix_web::test]
async fn the_fanout_scenario_over_sse_delivers_every_event_once() {
    let hub = spawn_hub(|s| s.workers = Some(2)).await;
    let url = hub.url("");

    let report =
        scenarios::fanout::run(FanoutConfig { transport: Transport::Sse, ..fanout(url.clone(), url) }).await.unwrap();

    assert_clean(&report);
    assert_eq!(report.deliveries, Some(20 * 50));
}

#[actix_web::test]
async fn the_fanout_scenario_over_long_poll_delivers_every_event_once() {
    let hub = spawn_hub(|s| s.workers = Some(2)).await;
    let url = hub.url("");

    let report =
        scenarios::fanout::run(FanoutConfig { transport: Transport::Poll, ..fanout(url.clone(), url) }).await.unwrap();

    assert_clean(&report);
    assert_eq!(report.deliveries, Some(20 * 50));
}

#[actix_web::test]
async fn the_cluster_scenario_delivers_across_hubs_once() {
    let db = test_db!();
    let publishing = spawn_pg_hub(&db.url, |_| {}).await;
    let subscribing = spawn_pg_hub(&db.url, |_| {}).await;

    let report = scenarios::fanout::run(fanout(subscribing.url(""), publishing.url(""))).await.unwrap();

    assert_clean(&report);
    assert_eq!(report.deliveries, Some(1000));
}

#[actix_web::test]
async fn the_idle_churn_and_catchup_scenarios_run_clean() {
    let hub = spawn_hub(|_| {}).await;
    let pids = vec![std::process::id()];

    let idle = |by| IdleConfig {
        peer: Peer::Hub,
        hub: hub.url(""),
        by,
        connections: 50,
        concurrency: 20,
        hold_s: 0.0,
        hub_pids: pids.clone(),
    };
    let by_query = scenarios::idle::run(idle(SubscribeBy::Query)).await.unwrap();
    let by_frame = scenarios::idle::run(idle(SubscribeBy::Frame)).await.unwrap();
    let churn = scenarios::churn::run(ChurnConfig {
        hub: hub.url(""),
        connections: 200,
        concurrency: 16,
        hub_pids: pids.clone(),
    });
    let churn = churn.await.unwrap();
    let catchup = CatchupConfig { hub: hub.url(""), events: 3000, payload_bytes: 100, hub_pids: pids.clone() };
    let catchup = scenarios::catchup::run(catchup).await.unwrap();

    for report in [&by_query, &by_frame, &churn, &catchup] {
        assert_clean(report);
    }
    assert!(by_query.server_rss_per_connection_kib.is_some() && by_frame.server_rss_per_connection_kib.is_some());
    assert_eq!(catchup.deliveries, Some(3000));
}

#[actix_web::test]
async fn the_publish_scenario_runs_over_http_the_crate_and_plain_inserts() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |_| {}).await;

    let runs = [Via::Http, Via::Crate, Via::Insert, Via::InsertLog].into_iter().map(|via| (via, false));
    for (via, in_transaction) in runs.chain([(Via::Crate, true), (Via::InsertLog, true)]) {
        let config = PublishConfig {
            hub: hub.url(""),
            database_url: Some(db.url.clone()),
            via,
            publishers: 2,
            batch: 5,
            duration_s: 0.3,
            in_transaction,
            rate: 0.0,
            payload_bytes: 100,
            hub_pids: Vec::new(),
        };
        let report = scenarios::publish::run(config).await.unwrap();
        assert_clean(&report);
        assert!(report.events_per_s.unwrap() > 0.0, "{via:?} ({in_transaction}): {}", report.summary());
    }
    let pool = db.pool().await;
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM realtime_inbox").fetch_one(&pool).await.unwrap();
    assert_eq!(waiting, 0, "the hub moved every event the crate published");
}

#[actix_web::test]
async fn the_publish_scenario_keeps_to_the_rate_it_is_given() {
    let db = test_db!();
    let hub = spawn_pg_hub(&db.url, |_| {}).await;
    let config = PublishConfig {
        hub: hub.url(""),
        database_url: None,
        via: Via::Http,
        publishers: 2,
        batch: 5,
        duration_s: 1.0,
        in_transaction: false,
        rate: 200.0,
        payload_bytes: 100,
        hub_pids: Vec::new(),
    };

    let report = scenarios::publish::run(config).await.unwrap();

    // 200 events/s is 20 requests a second of 5 events from each publisher; unpaced, a hub takes thousands. A
    // busy machine may answer slower than the pace (the lower end), never faster.
    assert_clean(&report);
    let rate = report.events_per_s.unwrap();
    assert!(rate > 0.0 && rate <= 260.0, "{}", report.summary());
}
