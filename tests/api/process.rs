//! The `hub` binary as a separate process, for tests that need its real output or real signals.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

/// Builds the `hub` binary once per test process and returns its path.
pub fn hub_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace").to_path_buf();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = std::process::Command::new(cargo)
                .args(["build", "--quiet", "-p", "hub", "--bin", "hub"])
                .current_dir(&workspace)
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the hub binary failed");
            let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| workspace.join("target"), PathBuf::from);
            target.join("debug").join("hub")
        })
        .clone()
}

/// A hub process on a free loopback port; killed when dropped.
pub struct HubProcess {
    pub port: u16,
    child: Child,
    /// Drain stdout and stderr while the hub runs (a full pipe would block its logging).
    readers: Vec<JoinHandle<String>>,
}

fn drain(mut pipe: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes).await;
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl HubProcess {
    /// Starts the binary with `env` and waits until `/readyz` answers 200.
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut command = Command::new(hub_binary());
        command
            .env_clear()
            .env("HUB_BIND", format!("127.0.0.1:{port}"))
            .env("HUB_WORKERS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the hub starts");
        let readers = vec![drain(child.stdout.take().expect("piped")), drain(child.stderr.take().expect("piped"))];
        let process = Self { port, child, readers };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            let ready = client.get(format!("http://127.0.0.1:{port}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return process;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the hub process did not become ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends SIGTERM, as Kubernetes does before stopping a pod.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`STOP` freezes the process with its connections open, `CONT` thaws it).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("the hub is running");
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the process to exit; `None` if it is still running after `wait`.
    pub async fn exited_within(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(wait, self.child.wait()).await.ok().and_then(Result::ok)
    }

    /// Stops the process (SIGKILL) and returns everything it wrote to stdout and stderr.
    pub async fn stop_and_read_output(mut self) -> String {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        let mut output = String::new();
        for reader in self.readers.drain(..) {
            output.push_str(&reader.await.unwrap_or_default());
        }
        output
    }
}
