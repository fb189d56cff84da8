//! PostgreSQL for tests: a fresh database per test on a shared server, and throwaway clusters for tests that stop
//! or restart PostgreSQL itself.
//!
//! The shared server is `DATABASE_URL` when set, else the local server at 127.0.0.1:5432, else a throwaway cluster
//! started once per test process with the system's `initdb`/`postgres`. With `HUB_REQUIRE_PG=1` a missing
//! PostgreSQL fails the test instead of skipping it.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::OnceCell;

const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, dropped when the test passes (kept for inspection when it fails).
pub struct TestDb {
    pub url: String,
    name: String,
    admin_url: String,
}

/// Gives the test a fresh database, or returns from the test (skipping it) when no PostgreSQL can be had and
/// `HUB_REQUIRE_PG` is not set.
#[macro_export]
macro_rules! test_db {
    () => {
        match $crate::db::TestDb::create().await {
            Some(db) => db,
            None => {
                eprintln!("skipped: no PostgreSQL (set HUB_REQUIRE_PG=1 to fail instead)");
                return;
            }
        }
    };
}

impl TestDb {
    pub async fn create() -> Option<Self> {
        let admin_url = shared_server().await?;
        let name = format!("hub_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnectOptions::from_str(&admin_url).expect("a valid URL").connect().await.expect("admin");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("CREATE DATABASE");
        let url =
            PgConnectOptions::from_str(&admin_url).expect("a valid URL").database(&name).to_url_lossy().to_string();
        Some(Self { url, name, admin_url })
    }

    /// A small pool on the test's database, for a test's own queries.
    pub async fn pool(&self) -> PgPool {
        PgPoolOptions::new().max_connections(4).connect(&self.url).await.expect("connects to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} of the failed test", self.name);
            return;
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let mut admin = PgConnectOptions::from_str(&admin_url).ok()?.connect().await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The admin URL of the shared server, found once per process.
async fn shared_server() -> Option<String> {
    static SERVER: OnceCell<Option<String>> = OnceCell::const_new();
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a valid URL");
                return Some(options.database("postgres").to_url_lossy().to_string());
            }
            if reachable(LOCAL_SERVER).await {
                return Some(LOCAL_SERVER.to_owned());
            }
            match Cluster::start().await {
                Some(cluster) => {
                    let url = cluster.url("postgres");
                    // The cluster serves every test of this process; it stops with the machine's temp cleanup.
                    std::mem::forget(cluster);
                    Some(url)
                }
                None if required() => panic!(
                    "HUB_REQUIRE_PG=1 but there is no PostgreSQL: no DATABASE_URL, nothing at 127.0.0.1:5432, \
                     and no initdb to start one"
                ),
                None => None,
            }
        })
        .await
        .clone()
}

fn required() -> bool {
    std::env::var("HUB_REQUIRE_PG").is_ok_and(|v| v == "1")
}

async fn reachable(url: &str) -> bool {
    let Ok(options) = PgConnectOptions::from_str(url) else { return false };
    matches!(tokio::time::timeout(Duration::from_secs(3), options.connect()).await, Ok(Ok(_)))
}

/// A PostgreSQL cluster of the test's own: initdb in a temporary directory, a free port.
pub use loadgen::servers::PgCluster as Cluster;
