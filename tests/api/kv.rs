//! Redis for tests: a key prefix of its own per test on the shared server, and throwaway servers for tests that
//! restart, empty or break Redis itself.
//!
//! The shared server is `REDIS_URL` when set, else the local server at 127.0.0.1:6379. With `HUB_REQUIRE_REDIS=1`
//! a missing Redis fails the test instead of skipping it.

use std::time::Duration;

use tokio::sync::OnceCell;

const LOCAL_SERVER: &str = "redis://127.0.0.1:6379";

/// A log of its own for one test on the shared Redis: its own key prefix, whose keys are deleted when the test
/// passes.
pub struct TestRedis {
    pub url: String,
    pub prefix: String,
}

/// Gives the test a prefix of its own on the shared Redis, or returns from the test (skipping it) when there is no
/// Redis and `HUB_REQUIRE_REDIS` is not set.
#[macro_export]
macro_rules! test_redis {
    () => {
        match $crate::kv::TestRedis::create().await {
            Some(redis) => redis,
            None => {
                eprintln!("skipped: no Redis (set HUB_REQUIRE_REDIS=1 to fail instead)");
                return;
            }
        }
    };
}

/// A throwaway Redis server of the test's own, or a return from the test when there is no `redis-server`.
#[macro_export]
macro_rules! throwaway_redis {
    () => {
        match $crate::kv::RedisServer::start().await {
            Some(server) => server,
            None => {
                assert!(
                    !$crate::kv::required(),
                    "HUB_REQUIRE_REDIS=1 but there is no redis-server for a throwaway server"
                );
                eprintln!("skipped: no redis-server");
                return;
            }
        }
    };
}

impl TestRedis {
    pub async fn create() -> Option<Self> {
        let url = shared_server().await?;
        Some(Self { url, prefix: format!("test-{}", uuid::Uuid::new_v4().simple()) })
    }

    /// Closes the connections of this test's hubs that block reading the log (`CLIENT KILL`); returns how many.
    pub async fn kill_readers(&self) -> usize {
        kill_clients(&self.url, &format!("realtime-hub-reader:{}", self.prefix)).await
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping the Redis keys {{{}}}:* of the failed test", self.prefix);
            return;
        }
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let client = redis::Client::open(url).ok()?;
            let mut connection = client.get_connection().ok()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{{{prefix}}}:*")).query(&mut connection).ok()?;
            if !keys.is_empty() {
                redis::cmd("DEL").arg(keys).exec(&mut connection).ok()?;
            }
            Some(())
        })
        .join();
    }
}

pub fn required() -> bool {
    std::env::var("HUB_REQUIRE_REDIS").is_ok_and(|v| v == "1")
}

async fn shared_server() -> Option<String> {
    static SERVER: OnceCell<Option<String>> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            let url = std::env::var("REDIS_URL").unwrap_or_else(|_| LOCAL_SERVER.to_owned());
            if ping(&url).await {
                return Some(url);
            }
            assert!(!required(), "HUB_REQUIRE_REDIS=1 but nothing answers at {url}");
            None
        })
        .await
        .clone()
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else { return false };
    let answer = tokio::time::timeout(Duration::from_secs(2), async {
        let mut connection = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut connection).await.ok()
    })
    .await;
    matches!(answer, Ok(Some(_)))
}

/// Closes every client connection named `name`; returns how many.
async fn kill_clients(url: &str, name: &str) -> usize {
    let client = redis::Client::open(url).expect("a valid URL");
    let mut connection = client.get_multiplexed_async_connection().await.expect("Redis answers");
    let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut connection).await.expect("CLIENT LIST");
    let mut killed = 0;
    for line in list.lines() {
        let field = |key: &str| line.split(' ').find_map(|f| f.strip_prefix(key)).map(str::to_owned);
        if field("name=").as_deref() == Some(name)
            && let Some(id) = field("id=")
        {
            let n: usize =
                redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id).query_async(&mut connection).await.unwrap_or(0);
            killed += n;
        }
    }
    killed
}

/// A Redis server of the test's own on a free port.
pub use loadgen::servers::RedisServer;
