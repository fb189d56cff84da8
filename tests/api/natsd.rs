//! NATS for tests: a stream of its own per test on the shared server, and servers or three-node JetStream clusters
//! of the test's own for tests that kill or restart NATS itself.
//!
//! The shared server is `NATS_URL` when set, else the local server at 127.0.0.1:4222. With `HUB_REQUIRE_NATS=1` a
//! missing NATS fails the test instead of skipping it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
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
            let url = std::env::var("NATS_URL").unwrap_or_else(|_| LOCAL_SERVER.to_owned());
            let answers = tokio::time::timeout(Duration::from_secs(3), async_nats::connect(url.as_str())).await;
            if matches!(answers, Ok(Ok(_))) {
                return Some(url);
            }
            assert!(!required(), "HUB_REQUIRE_NATS=1 but nothing answers at {url}");
            None
        })
        .await
        .clone()
}

/// `n` distinct free ports: every listener is held until all are picked, so the system cannot hand one out twice.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn which(program: &str) -> bool {
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
                .args(["--cluster_name", "hubtest", "--cluster", &format!("nats://127.0.0.1:{cluster_port}")])
                .args(["--routes", &routes.join(",")]);
        }
        let child = command.stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true).spawn();
        self.child = Some(child.expect("nats-server starts"));
        for _ in 0..100 {
            if self.monitoring("/healthz").await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server {} did not answer on port {}", self.name, self.port);
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

/// One JetStream server, or a cluster of three (or five) routed to each other on loopback.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
    dir: PathBuf,
}

impl NatsCluster {
    /// Starts `size` nodes (1: a plain server) and waits until JetStream has a meta leader; `None` when the
    /// system has no `nats-server`.
    pub async fn start(size: usize) -> Option<Self> {
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
        for node in &mut nodes {
            node.start().await;
        }
        let cluster = Self { nodes, dir };
        cluster.wait_for_meta_leader().await;
        Some(cluster)
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
