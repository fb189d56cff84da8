//! `hub smoke`, the post-deploy check, against a running hub: it passes, and fails with the reason on a bad token.

use serde_json::json;

use crate::helpers::spawn_hub;
use crate::process::hub_binary;
use crate::tokens::{SECRET, claims, hs256};

/// Runs `hub smoke` against the hub at `port` (with `token`, if any); whether it passed, and what it printed.
pub async fn smoke(port: u16, token: Option<&str>) -> (bool, String) {
    let mut command = tokio::process::Command::new(hub_binary());
    command.args(["smoke", "--url", &format!("http://127.0.0.1:{port}"), "--timeout", "5s"]);
    if let Some(token) = token {
        command.args(["--token", token]);
    }
    let output = command.env("RUST_LOG", "warn").output().await.expect("hub smoke runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[actix_web::test]
async fn the_smoke_check_passes_against_a_working_hub_and_prints_each_latency() {
    let hub = spawn_hub(|s| s.jwt_secret = Some(SECRET.into())).await;
    let token = hs256(&claims(&["hub.smoke"], json!({}), &["hub.smoke"], 600));

    let (passed, output) = smoke(hub.port, Some(&token)).await;

    assert!(passed, "{output}");
    assert!(output.contains("provider memory"), "{output}");
    for step in ["readyz", "health", "websocket delivery", "sse delivery", "long-poll"] {
        assert!(output.contains(&format!("ok   {step}")), "{step} missing from:\n{output}");
    }
    assert!(output.contains(" ms"), "{output}");
}

#[actix_web::test]
async fn the_smoke_check_fails_with_the_reason_when_the_token_is_refused() {
    let hub = spawn_hub(|s| s.jwt_secret = Some(SECRET.into())).await;
    let forged =
        crate::tokens::hs256_with(&claims(&["hub.smoke"], json!({}), &["hub.smoke"], 600), "another-secret-entirely");
    let reader_only = hs256(&claims(&["hub.smoke"], json!({}), &[], 600));

    let (passed, output) = smoke(hub.port, Some(&forged)).await;
    assert!(!passed);
    assert!(output.contains("FAILED") && output.contains("401") && output.contains("token was refused"), "{output}");

    let (passed, output) = smoke(hub.port, Some(&reader_only)).await;
    assert!(!passed);
    assert!(output.contains("publish: answered 403"), "{output}");
}
