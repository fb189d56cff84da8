//! A real browser's EventSource against the hub (Debian's chromium driven by playwright-core).

use std::path::Path;

use crate::helpers::spawn_hub;

/// Whether node, the installed playwright-core and /usr/bin/chromium are all here; with `HUB_REQUIRE_BROWSER=1`
/// their absence fails the test instead of skipping it.
fn browser_available(browser_dir: &Path) -> bool {
    let ready = Path::new("/usr/bin/chromium").exists()
        && browser_dir.join("node_modules/playwright-core").exists()
        && std::process::Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ready && std::env::var("HUB_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("HUB_REQUIRE_BROWSER=1 but node, tests/browser/node_modules or /usr/bin/chromium is missing");
    }
    ready
}

/// Runs a browser script with `args`; its last stdout line is its JSON result, which must say `"ok": true`.
async fn run_script(script: &Path, args: &[String]) -> serde_json::Value {
    let output = tokio::process::Command::new("node").arg(script).args(args).output().await.expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or("null"))
        .unwrap_or_else(|_| panic!("no result from the browser script:\n{stdout}\n{stderr}"));
    assert_eq!(result["ok"], true, "{result}\n{stderr}");
    result
}

#[actix_web::test]
async fn a_browser_eventsource_resumes_by_itself_after_its_connection_is_cut_and_sees_every_event_once() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !browser_available(&browser_dir) {
        return eprintln!("skipped: no browser set-up (run `npm ci` in tests/browser and install chromium)");
    }
    let hub = spawn_hub(|s| s.cors_origins = vec!["*".into()]).await;

    let result = run_script(&browser_dir.join("eventsource.mjs"), &[hub.port.to_string()]).await;

    assert!(result["opens"].as_u64().unwrap() >= 2, "the EventSource reconnected by itself");
}

/// The staff dashboard end to end in Chromium: events appear, two tabs agree, a reset reloads the page's state (and
/// the log panel follows the runs that still exist), a hub killed and restarted on PostgreSQL shows reconnecting and
/// loses nothing, a refused WebSocket falls back, a page on a fallback returns to WebSocket once it works again
/// with every event once, and a long run log opens on its last 500 lines.
/// `HUB_DASHBOARD_SHOTS=<dir>` also writes the screenshots kept in docs/.
#[actix_web::test]
async fn the_dashboard_shows_live_state_recovers_after_a_restart_falls_back_and_returns_to_websocket() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !browser_available(&browser_dir) {
        return eprintln!("skipped: no browser set-up (run `npm ci` in tests/browser and install chromium)");
    }
    let db = test_db!();
    let shots = std::env::var("HUB_DASHBOARD_SHOTS").unwrap_or_default();

    let binary = crate::process::hub_binary().to_string_lossy().into_owned();
    let result = run_script(&browser_dir.join("dashboard.mjs"), &[binary, db.url.clone(), shots]).await;

    assert_eq!(result["checks"].as_array().unwrap().len(), 6, "{result}");
}

/// The dashboard on 10-second tokens from a token source, with no clock leeway: one WebSocket across three renewals
/// with every event applied, the operations panel listing the connections, and a clean stop (no reconnect loop)
/// when an operator revokes the page's subject. `HUB_DASHBOARD_SHOTS=<dir>` also writes the screenshots in docs/.
#[actix_web::test]
async fn a_dashboard_on_a_ten_second_token_stays_on_one_websocket_across_renewals_and_stops_when_revoked() {
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    if !browser_available(&browser_dir) {
        return eprintln!("skipped: no browser set-up (run `npm ci` in tests/browser and install chromium)");
    }
    let shots = std::env::var("HUB_DASHBOARD_SHOTS").unwrap_or_default();

    let binary = crate::process::hub_binary().to_string_lossy().into_owned();
    let result = run_script(&browser_dir.join("renewal.mjs"), &[binary, shots]).await;

    assert!(result["refreshes"].as_u64().unwrap() >= 3, "{result}");
    assert_eq!(result["sockets"], 1, "{result}");
    assert_eq!(result["applied"], result["published"], "{result}");
}
