//! PostgreSQL for tests: a fresh database per test on a shared server, and throwaway clusters for tests that stop
//! or restart PostgreSQL itself.
//!
//! The shared server is `DATABASE_URL` when set, else the local server at 127.0.0.1:5432, else a throwaway cluster
//! started once per test process with the system's `initdb`/`postgres`. With `HUB_REQUIRE_PG=1` a missing
//! PostgreSQL fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::process::Command;
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
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Cluster {
    /// Starts a throwaway cluster, or `None` when the system has no `initdb`.
    pub async fn start() -> Option<Self> {
        let bin = postgres_bindir()?;
        let dir = std::env::temp_dir().join(format!("hub-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        if running_as_root() {
            let (uid, gid) = postgres_ids().await?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown of the cluster directory");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let cluster = Self { dir, port, bin };
        let data = cluster.dir.join("data");
        let initdb = cluster.bin.join("initdb");
        let status = cluster
            .command(&initdb)
            .args(["-D", path(&data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .status()
            .await
            .ok()?;
        assert!(status.success(), "initdb failed");
        cluster.start_again().await;
        Some(cluster)
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, path(&self.dir));
        let status = self
            .command(&self.bin.join("pg_ctl"))
            .args([
                "-D",
                path(&self.dir.join("data")),
                "-l",
                path(&self.dir.join("log")),
                "-o",
                &options,
                "-w",
                "start",
            ])
            .status()
            .await
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl start failed; see {}", self.dir.join("log").display());
    }

    /// Stops the cluster (fast shutdown: open connections are terminated).
    pub async fn stop(&self) {
        let status = self
            .command(&self.bin.join("pg_ctl"))
            .args(["-D", path(&self.dir.join("data")), "-m", "fast", "-w", "stop"])
            .status()
            .await
            .expect("pg_ctl runs");
        assert!(status.success(), "pg_ctl stop failed");
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = if running_as_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        };
        command.stdout(std::process::Stdio::null());
        command
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.dir.join("data");
        let mut command = if running_as_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&pg_ctl);
            command
        } else {
            std::process::Command::new(&pg_ctl)
        };
        let _ = command.args(["-D", path(&data), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn running_as_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

async fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &'static str| async move {
        let out = Command::new("id").args([flag, "postgres"]).output().await.ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse::<u32>().ok()
    };
    Some((id("-u").await?, id("-g").await?))
}

/// Where `initdb` and `pg_ctl` live: next to `initdb` on the PATH, else the newest Debian install.
fn postgres_bindir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("initdb")).find(|p| p.exists()));
    let initdb = on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin/initdb")))
            .filter(|p| p.exists())
            .collect();
        found.sort();
        found.pop()
    })?;
    // Follow a symlink (e.g. /usr/local/bin/initdb) to the directory that also holds pg_ctl and postgres.
    std::fs::canonicalize(initdb).ok()?.parent().map(Path::to_path_buf)
}
