//! A worker that runs a fake build and streams its status and logs through the publisher crate, then deploys it,
//! raises a system alert, and changes a feature flag (what the staff dashboard at /dashboard shows).
//!
//! ```sh
//! cargo run -p hub &                                         # a hub on the in-memory log
//! cargo run -p publisher --example fake_run                  # publishes over HTTP to it
//! HUB_URL=http://hub:8080 HUB_TOKEN=<jwt> cargo run -p publisher --example fake_run
//! DATABASE_URL=postgres://… cargo run -p publisher --example fake_run   # straight into PostgreSQL instead
//! ```
//! Watch it with `curl -N 'localhost:8080/sse?topics=run.*&project_id=demo&since=0'`.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use publisher::events::{
    CustomEvent, DeployEvent, DeployId, DeployScope, DeployStatus, ProjectId, RunEvent, RunId, RunScope, RunStatus,
    SystemError,
};
use publisher::{HttpSink, LogStreamWriter, LogTarget, PgSink, Publisher, Sink};
use serde_json::json;

async fn run<S: Sink>(publisher: Publisher<S>) -> Result<(), Box<dyn std::error::Error>> {
    let run_id = format!("run-{}", std::process::id());
    let scope = RunScope::new(ProjectId::new("demo")?, RunId::new(&run_id)?);
    publisher.publish(RunEvent::new(scope.clone(), RunStatus::Running)).await?;

    let mut log = LogStreamWriter::new(&publisher, LogTarget::Run(scope.clone()));
    for step in 1..=5 {
        let mut event = RunEvent::new(scope.clone(), RunStatus::Running);
        event.step = Some(format!("step {step}/5"));
        publisher.publish(event).await?;
        for line in 1..=3 {
            // The token below is masked by the redaction policy before it leaves the process.
            let text =
                format!("[{step}.{line}] compiling module {line} (GITHUB_TOKEN=ghp_{:0>36})\n", step * 10 + line);
            log.write(text.as_bytes()).await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let chunks = log.finish().await?;
    publisher.publish(RunEvent::new(scope, RunStatus::Succeeded)).await?;

    let deploy = DeployScope::new(ProjectId::new("demo")?, DeployId::new(format!("deploy-{}", std::process::id()))?);
    publisher.publish(DeployEvent::new(deploy.clone(), DeployStatus::InProgress)).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher.publish(DeployEvent::new(deploy, DeployStatus::Succeeded)).await?;
    publisher.publish(SystemError::new("scheduler", "queue latency above 5 s for pool build-large")).await?;
    // What the feature-flag service's database source publishes (docs/SOURCES.md), in its message shape.
    let flag = json!({"source": "audit", "type": "feature_updated", "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
                      "project_id": "demo", "environment": "prod", "entity": "feature", "entity_id": "new-checkout",
                      "action": "updated"});
    publisher.publish(CustomEvent::new("flags.audit", [("project_id", "demo"), ("env", "prod")], &flag)?).await?;
    println!("published run {run_id}: 7 status events and {chunks} log chunks, a deploy, an alert and a flag change");
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let pool = sqlx::PgPool::connect(&url).await?;
        return run(Publisher::new(PgSink::new(pool))).await;
    }
    let hub = std::env::var("HUB_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let mut sink = HttpSink::new(&hub);
    if let Ok(token) = std::env::var("HUB_TOKEN") {
        sink = sink.with_token(token);
    }
    run(Publisher::new(sink)).await
}
