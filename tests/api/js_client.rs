//! The JavaScript client (clients/js) under Node against a real hub: its unit tests, and its integration tests
//! with this hub's URL.

use std::path::Path;

use crate::helpers::spawn_hub;

#[actix_web::test]
async fn the_javascript_client_passes_its_tests_under_node_against_a_real_hub() {
    let client_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/js");
    if std::process::Command::new("node").arg("--version").output().is_err() {
        assert!(std::env::var("HUB_REQUIRE_BROWSER").is_err(), "HUB_REQUIRE_BROWSER=1 but there is no node");
        return eprintln!("skipped: no node");
    }
    let hub = spawn_hub(|s| {
        s.publish_rate = 0;
        s.topic_policies = Some("[[policy]]\ntopics = [\"presence.*\"]\npresence = true".into());
    })
    .await;

    let output = tokio::process::Command::new("node")
        .args(["--experimental-websocket", "--test", "test/"])
        .current_dir(&client_dir)
        .env("HUB_URL", hub.url(""))
        .output()
        .await
        .expect("node runs");

    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{text}");
    assert!(text.contains("# fail 0") && text.contains("# skipped 0"), "{text}");
}
