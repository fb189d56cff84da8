//! A TCP proxy that cuts the network the way a partition does: without closing anything.

use std::net::SocketAddr;
use std::str::FromStr;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// The network between the proxy's clients and its upstream: how many cuts there were, and whether one lasts now.
#[derive(Clone, Copy, Default)]
struct Network {
    cuts: u64,
    cut: bool,
}

/// Forwards loopback connections to `upstream` until [`SilentProxy::cut`]: from then on every connection open
/// hears nothing and nothing it sends arrives, and none is closed (a peer that vanished, a flow a NAT dropped);
/// new connections are accepted but not forwarded until [`SilentProxy::heal`].
pub struct SilentProxy {
    pub port: u16,
    network: watch::Sender<Network>,
    acceptor: JoinHandle<()>,
}

impl SilentProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let (network, _) = watch::channel(Network::default());
        let watched = network.clone();
        let acceptor = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(forward(client, upstream, watched.subscribe()));
            }
        });
        Self { port, network, acceptor }
    }

    /// A proxy in front of the PostgreSQL server of `database_url`, and the URL that goes through it.
    pub async fn for_database(database_url: &str) -> (Self, String) {
        let options = PgConnectOptions::from_str(database_url).expect("a valid URL");
        let upstream = format!("{}:{}", options.get_host(), options.get_port());
        let upstream = tokio::net::lookup_host(upstream).await.expect("resolves").next().expect("an address");
        let proxy = Self::start(upstream).await;
        let url = options.host("127.0.0.1").port(proxy.port).to_url_lossy().to_string();
        (proxy, url)
    }

    /// Every connection open now goes silent for good; new ones wait.
    pub fn cut(&self) {
        self.network.send_modify(|n| {
            n.cuts += 1;
            n.cut = true;
        });
    }

    /// New connections are forwarded again. The silent ones stay silent towards the client; their upstream side is
    /// closed, as the server's keepalive probes would have found the client gone.
    pub fn heal(&self) {
        self.network.send_modify(|n| n.cut = false);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut network: watch::Receiver<Network>) {
    if network.wait_for(|n| !n.cut).await.is_err() {
        return;
    }
    let born = network.borrow().cuts;
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let (mut from_client, mut from_server) = (vec![0; 16 * 1024], vec![0; 16 * 1024]);
    while network.borrow().cuts == born {
        tokio::select! {
            read = client.read(&mut from_client) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if server.write_all(&from_client[..n]).await.is_err() { return },
            },
            read = server.read(&mut from_server) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => if client.write_all(&from_server[..n]).await.is_err() { return },
            },
            changed = network.changed() => if changed.is_err() { return },
        }
    }
    // Cut: the client hears nothing ever again and what it sends is swallowed; the server's side is closed once
    // the network heals.
    let healed = async move {
        let _ = network.wait_for(|n| !n.cut).await;
        drop(server);
    };
    let swallowed = async { while matches!(client.read(&mut from_client).await, Ok(n) if n > 0) {} };
    tokio::join!(healed, swallowed);
}
