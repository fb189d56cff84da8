//! Throwaway log servers for tests and fault storms: a PostgreSQL cluster (initdb in a temporary directory, a free
//! port), a Redis server on a free port, and a NATS JetStream server or three-node cluster, each of which can be
//! stopped, broken and started again without touching the machine's shared servers. Their methods panic when a server cannot be started: they are test
//! and benchmark harness, where that is the failure to report.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

/// A PostgreSQL cluster of its own: initdb in a temporary directory, a free port; removed when dropped.
pub struct PgCluster {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

/// How a cluster is stopped (`pg_ctl -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Open connections are terminated, everything is flushed.
    Fast,
    /// Like a crash: the next start runs recovery.
    Immediate,
}

impl PgCluster {
    /// Starts a throwaway cluster, or `None` when the system has no `initdb`.
    pub async fn start() -> Option<Self> {
        let bin = postgres_bindir()?;
        let dir = std::env::temp_dir().join(format!("hub-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        if running_as_root() {
            let (uid, gid) = postgres_ids().await?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown of the cluster directory");
        }
        let port = free_port()?;
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
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            path(&self.dir)
        );
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
        self.stop_with(StopMode::Fast).await;
    }

    pub async fn stop_with(&self, mode: StopMode) {
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let status = self
            .command(&self.bin.join("pg_ctl"))
            .args(["-D", path(&self.dir.join("data")), "-m", mode, "-w", "stop"])
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
        command.stdout(Stdio::null());
        command
    }
}

impl Drop for PgCluster {
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

/// A Redis server of its own on a free port; killed when dropped. It keeps nothing on disk unless asked to save
/// on a restart ([`RedisServer::restart_keeping_data`]).
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server, or `None` when the system has no `redis-server`.
    pub async fn start() -> Option<Self> {
        let found = std::process::Command::new("which").arg("redis-server").stdout(Stdio::null()).status().ok()?;
        if !found.success() {
            return None;
        }
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!("hub-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).ok()?;
        let mut server = Self { port, dir, child: None };
        server.start_again().await;
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) server on the same port, with what was saved (nothing, unless the last stop saved),
    /// and waits until it answers.
    pub async fn start_again(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        for _ in 0..100 {
            if self.command(&["PING"]).await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the throwaway redis-server did not answer on port {}", self.port);
    }

    /// Kills the server; its data is gone (it keeps nothing on disk).
    pub async fn stop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("dump.rdb"));
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Shuts the server down saving its data, as a Redis with persistence does, and starts it again with it.
    pub async fn restart_keeping_data(&mut self) {
        let _ = self.command(&["SHUTDOWN", "SAVE"]).await;
        if let Some(mut child) = self.child.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.start_again().await;
    }

    /// Closes every client connection whose name starts with `prefix`; returns how many.
    pub async fn kill_clients(&self, prefix: &str) -> usize {
        let Some(list) = self.command(&["CLIENT", "LIST"]).await else { return 0 };
        let mut killed = 0;
        for line in list.lines() {
            let field = |key: &str| line.split(' ').find_map(|f| f.strip_prefix(key)).map(str::to_owned);
            if field("name=").is_some_and(|n| n.starts_with(prefix))
                && let Some(id) = field("id=")
                && self.command(&["CLIENT", "KILL", "ID", &id]).await.is_some_and(|n| n.trim() == "1")
            {
                killed += 1;
            }
        }
        killed
    }

    /// Runs `redis-cli` against the server; its output, or `None` when it did not answer.
    async fn command(&self, args: &[&str]) -> Option<String> {
        let run = Command::new("redis-cli").args(["-h", "127.0.0.1", "-p", &self.port.to_string()]).args(args).output();
        let output = tokio::time::timeout(Duration::from_secs(5), run).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success() && !text.starts_with("Could not connect")).then_some(text)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `n` distinct free ports: every listener is held until all are picked, so the system cannot hand one out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound listener").port()).collect()
}

/// Whether `program` is on `PATH`.
pub fn which(program: &str) -> bool {
    std::process::Command::new("which").arg(program).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// One `nats-server` with JetStream on loopback ports, its store in a temporary directory; killed when dropped.
pub struct NatsNode {
    pub name: String,
    pub port: u16,
    pub monitor: u16,
    cluster_port: Option<u16>,
    routes: Vec<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsNode {
    fn new(name: &str, dir: &std::path::Path, port: u16, monitor: u16) -> Self {
        Self {
            name: name.to_owned(),
            port,
            monitor,
            cluster_port: None,
            routes: Vec::new(),
            dir: dir.join(name),
            child: None,
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) node on its ports and store, and waits until it answers.
    pub async fn start(&mut self) {
        let mut command = Command::new("nats-server");
        command
            .args(["-a", "127.0.0.1", "-js", "-n", &self.name])
            .args(["-p", &self.port.to_string(), "-m", &self.monitor.to_string()])
            .arg("-sd")
            .arg(&self.dir);
        if let Some(cluster_port) = self.cluster_port {
            let routes: Vec<String> = self.routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect();
            command
                .args(["--cluster_name", "hub", "--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--routes", &routes.join(",")]);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn();
        self.child = Some(child.expect("nats-server starts"));
        // Up to 20 s: a node restarted on two busy cores recovers its store first (5 s was once too short in the
        // minute storm of `cargo test`).
        for _ in 0..400 {
            if self.monitoring("/healthz").await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server {} did not answer on port {}", self.name, self.port);
    }

    /// The running node's process id, for signals a test sends it (SIGSTOP).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// SIGKILL: the node's store stays on disk for a restart.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// A monitoring endpoint's JSON, or `None` when the node does not answer.
    pub async fn monitoring(&self, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.monitor);
        reqwest::get(url).await.ok()?.json().await.ok()
    }
}

/// One JetStream server, or a cluster of three (or five) routed to each other on loopback.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts `size` nodes (1: a plain server) and waits until JetStream has a meta leader; `None` when the
    /// system has no `nats-server`.
    pub async fn start(size: usize) -> Option<Self> {
        let mut cluster = Self::prepare(size)?;
        cluster.launch().await;
        Some(cluster)
    }

    /// The nodes of a cluster of `size`, with their ports and stores, none started yet (so that what connects to
    /// it can start before it does); `None` when the system has no `nats-server`.
    pub fn prepare(size: usize) -> Option<Self> {
        if !which("nats-server") {
            return None;
        }
        let dir = std::env::temp_dir().join(format!("hub-nats-{}", uuid::Uuid::new_v4().simple()));
        let ports = free_ports(3 * size);
        let mut nodes: Vec<NatsNode> =
            (0..size).map(|i| NatsNode::new(&format!("n{i}"), &dir, ports[i], ports[size + i])).collect();
        if size > 1 {
            let cluster_ports = &ports[2 * size..];
            for (i, node) in nodes.iter_mut().enumerate() {
                node.cluster_port = Some(cluster_ports[i]);
                node.routes = cluster_ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect();
            }
        }
        Some(Self { nodes, dir })
    }

    /// Starts every node of a prepared cluster and waits until JetStream has a meta leader.
    pub async fn launch(&mut self) {
        for node in &mut self.nodes {
            node.start().await;
        }
        self.wait_for_meta_leader().await;
    }

    /// Every node's URL, comma-separated, as `NATS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes.iter().map(NatsNode::url).collect::<Vec<_>>().join(",")
    }

    /// Waits until JetStream has a meta leader that sees every other node as a current peer, so that a stream
    /// with as many replicas as nodes can be placed.
    async fn wait_for_meta_leader(&self) {
        for _ in 0..300 {
            for node in self.nodes.iter().filter(|n| n.child.is_some()) {
                let Some(jsz) = node.monitoring("/jsz").await else { continue };
                if self.nodes.len() == 1 {
                    return;
                }
                let meta = &jsz["meta_cluster"];
                let leader = meta["leader"].as_str().is_some_and(|l| !l.is_empty());
                let peers = meta["replicas"].as_array().cloned().unwrap_or_default();
                let current = peers.iter().filter(|p| p["current"] == true).count();
                if leader && current == self.nodes.len() - 1 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the NATS cluster elected no JetStream meta leader with every node as a current peer");
    }

    /// The name of the node leading `stream`, as the live nodes see it.
    pub async fn stream_leader(&self, stream: &str) -> Option<String> {
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let Some(jsz) = node.monitoring("/jsz?streams=true").await else { continue };
            let accounts = jsz["account_details"].as_array().cloned().unwrap_or_default();
            for account in accounts {
                for detail in account["stream_detail"].as_array().cloned().unwrap_or_default() {
                    if detail["name"] == stream
                        && let Some(leader) = detail["cluster"]["leader"].as_str().filter(|l| !l.is_empty())
                    {
                        return Some(leader.to_owned());
                    }
                }
            }
        }
        None
    }

    pub fn node_mut(&mut self, name: &str) -> &mut NatsNode {
        self.nodes.iter_mut().find(|n| n.name == name).expect("a node of this cluster")
    }

    /// Waits until `stream` has a leader again after a node was lost, returning its name.
    pub async fn wait_for_stream_leader(&self, stream: &str, other_than: Option<&str>, wait: Duration) -> String {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(leader) = self.stream_leader(stream).await.filter(|l| Some(l.as_str()) != other_than) {
                return leader;
            }
            assert!(tokio::time::Instant::now() < deadline, "{stream} had no new leader within {wait:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Option<u16> {
    Some(std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port())
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

async fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &'static str| async move {
        let out = Command::new("id").args([flag, "postgres"]).output().await.ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse::<u32>().ok()
    };
    Some((id("-u").await?, id("-g").await?))
}

/// Whether the system has PostgreSQL's server binaries, for a [`PgCluster`].
pub fn postgres_installed() -> bool {
    postgres_bindir().is_some()
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
