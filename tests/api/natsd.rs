//! NATS for tests: a stream of its own per test on the shared server, and servers or three-node JetStream clusters
//! of the test's own for tests that kill or restart NATS itself.
//!
//! The shared server is `HUB_TEST_NATS_URL` when set (`.ci/run` sets it to the PyPI server it starts), else
//! `NATS_URL`, else the local server at 127.0.0.1:4222; a server older than 2.12, which the hub refuses, counts as
//! missing. With `HUB_REQUIRE_NATS=1` a missing NATS fails the test instead of skipping it.

use std::time::Duration;

use tokio::sync::OnceCell;

const LOCAL_SERVER: &str = "nats://127.0.0.1:4222";

pub fn required() -> bool {
    std::env::var("HUB_REQUIRE_NATS").is_ok_and(|v| v == "1")
}

/// A stream of its own for one test on the shared server, deleted when the test passes.
pub struct TestStream {
    pub url: String,
    pub name: String,
}

impl TestStream {
    pub async fn create() -> Option<Self> {
        let url = shared_server().await?;
        Some(Self { url, name: format!("test_{}", uuid::Uuid::new_v4().simple()) })
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping the NATS stream {} of the failed test", self.name);
            return;
        }
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            // The hubs' revocation records and topic policies' positions live in streams beside the log's.
            runtime.block_on(delete_stream(&url, &format!("{name}-revocations")));
            runtime.block_on(delete_stream(&url, &format!("{name}-policies")));
            runtime.block_on(delete_stream(&url, &name))
        })
        .join();
    }
}

/// Deletes the stream `name` (as an operator would with `nats stream rm`); `None` when it could not.
pub async fn delete_stream(url: &str, name: &str) -> Option<()> {
    let client = async_nats::connect(url).await.ok()?;
    async_nats::jetstream::new(client).delete_stream(name).await.ok().map(|_| ())
}

async fn shared_server() -> Option<String> {
    static SERVER: OnceCell<Option<String>> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let url = std::env::var("HUB_TEST_NATS_URL")
                .or_else(|_| std::env::var("NATS_URL"))
                .unwrap_or_else(|_| LOCAL_SERVER.to_owned());
            let answers = tokio::time::timeout(Duration::from_secs(3), async_nats::connect(url.as_str())).await;
            let version = match answers {
                Ok(Ok(client)) => client.server_info().version,
                _ => {
                    assert!(!required(), "HUB_REQUIRE_NATS=1 but nothing answers at {url}");
                    return None;
                }
            };
            let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
            if (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (2, 12) {
                return Some(url);
            }
            assert!(!required(), "HUB_REQUIRE_NATS=1 but the NATS at {url} is {version}: the hub needs 2.12 or later");
            eprintln!("the NATS at {url} is {version}, older than the hub takes: NATS tests are skipped");
            None
        })
        .await
        .clone()
}

pub use loadgen::servers::NatsCluster;

/// A single JetStream server of the test's own, or a return from the test when there is no `nats-server`.
#[macro_export]
macro_rules! throwaway_nats {
    ($nodes:expr) => {
        match $crate::natsd::NatsCluster::start($nodes).await {
            Some(cluster) => cluster,
            None => {
                assert!(!$crate::natsd::required(), "HUB_REQUIRE_NATS=1 but there is no nats-server");
                eprintln!("skipped: no nats-server");
                return;
            }
        }
    };
}
