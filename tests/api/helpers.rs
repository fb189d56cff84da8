//! Shared test helpers: real hubs on loopback ports and real WebSocket and HTTP clients.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hub::Application;
use hub::settings::{Backend, Settings};
use hub::startup::Shutdown;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long a test waits for a frame it expects before failing.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// A hub serving on a loopback port.
pub struct TestHub {
    pub port: u16,
    pub http: reqwest::Client,
    shutdown: Shutdown,
}

/// Starts a hub on the in-memory log with test-friendly settings, adjusted by `configure`.
pub async fn spawn_hub(configure: impl FnOnce(&mut Settings)) -> TestHub {
    let mut settings = Settings {
        bind: "127.0.0.1:0".into(),
        workers: Some(1),
        node_id: Some("test-node".into()),
        ..Settings::default()
    };
    configure(&mut settings);
    let app = Application::build(settings).await.expect("the hub starts");
    let port = app.port();
    let shutdown = app.shutdown();
    actix_web::rt::spawn(app.run_until_stopped(false));
    TestHub { port, http: reqwest::Client::new(), shutdown }
}

/// Starts a hub on the PostgreSQL log at `database_url`, with a small pool.
pub async fn spawn_pg_hub(database_url: &str, configure: impl FnOnce(&mut Settings)) -> TestHub {
    let database_url = database_url.to_owned();
    spawn_hub(move |s| {
        s.backend = Some(Backend::Postgres);
        s.database_url = Some(database_url);
        s.db_pool_size = 3;
        s.inbox_poll = Duration::from_millis(50);
        configure(s);
    })
    .await
}

impl TestHub {
    /// Drops every connection and stops serving at once, as a crashed pod would.
    pub async fn kill(&self) {
        self.shutdown.abort().await;
    }

    /// Waits until `/readyz` answers `status`, failing after `wait`.
    pub async fn wait_ready(&self, status: u16, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let got = self.http.get(self.url("/readyz")).send().await.map(|r| r.status().as_u16()).ok();
            if got == Some(status) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "/readyz did not answer {status} within {wait:?}: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Opens a WebSocket to `path` (with its query) and reads the welcome frame.
    pub async fn ws(&self, path: &str) -> WsClient {
        let mut client = self.ws_raw(path).await.expect("the WebSocket upgrade succeeds");
        let welcome = client.next_json().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        client
    }

    /// Opens a WebSocket without reading anything; the error carries the HTTP answer of a refused upgrade.
    pub async fn ws_raw(&self, path: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(WsClient { stream })
    }

    pub async fn publish_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(self.url("/api/publish"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("the publish request is answered")
    }

    /// Publishes `body` (an event or an array) and returns the ids, failing the test on an error answer.
    pub async fn publish(&self, body: Value) -> Vec<u64> {
        let response = self.publish_raw(body.to_string()).await;
        let status = response.status();
        let answer: Value = response.json().await.expect("the answer is JSON");
        assert_eq!(status, 200, "{answer}");
        answer["ids"].as_array().expect("ids").iter().map(|id| id.as_u64().expect("integer id")).collect()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("answered");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// Starts the graceful shutdown a SIGTERM would start, without waiting for it to finish.
    pub fn begin_shutdown(&self) {
        let shutdown = self.shutdown.clone();
        actix_web::rt::spawn(async move { shutdown.begin().await });
    }
}

/// An event to publish on `topic` with `scope` and a payload `{"n": n}`.
pub fn event(topic: &str, scope: Value, n: u64) -> Value {
    json!({"topic": topic, "scope": scope, "payload": {"n": n}})
}

pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What came next on a WebSocket.
#[derive(Debug)]
pub enum Incoming {
    Json(Value),
    Closed(Option<CloseFrame>),
}

impl WsClient {
    pub async fn send_json(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("the frame is sent");
    }

    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream.send(Message::binary(bytes)).await.expect("the frame is sent");
    }

    /// The next text frame or close, skipping pings; `None` when nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Incoming> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Incoming::Closed(None)),
                Ok(Some(Err(_))) => return Some(Incoming::Closed(None)),
                Ok(Some(Ok(message))) => message,
            };
            match message {
                Message::Text(text) => {
                    return Some(Incoming::Json(serde_json::from_str(text.as_str()).expect("frames are JSON")));
                }
                Message::Close(frame) => return Some(Incoming::Closed(frame)),
                Message::Binary(_) => panic!("the hub sent a binary frame"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// The next JSON frame; fails the test on close or timeout.
    pub async fn next_json(&mut self) -> Value {
        match self.next_within(FRAME_TIMEOUT).await {
            Some(Incoming::Json(value)) => value,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, which must be of `kind`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.next_json().await;
        assert_eq!(frame["type"], kind, "expected a {kind} frame, got {frame}");
        frame
    }

    /// Subscribes and reads the `subscribed` answer.
    pub async fn subscribe(&mut self, frame: Value) -> Value {
        self.send_json(frame).await;
        self.expect("subscribed").await
    }

    /// Reads `n` event frames, failing on anything else.
    pub async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            events.push(self.expect("event").await);
        }
        events
    }

    /// Asserts that nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(incoming) = self.next_within(wait).await {
            panic!("expected silence, got {incoming:?}");
        }
    }

    /// Reads until the connection closes and returns the close code, failing if a frame other than those in
    /// `allowed` types arrives first.
    pub async fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        loop {
            match self.next_within(wait).await {
                Some(Incoming::Closed(frame)) => return frame.map(|f| u16::from(f.code)),
                Some(Incoming::Json(_)) => continue,
                None => panic!("the connection did not close within {wait:?}"),
            }
        }
    }

    /// Whether the connection still answers a ping op.
    pub async fn assert_usable(&mut self) {
        self.send_json(json!({"op": "ping"})).await;
        self.expect("pong").await;
    }
}

/// The ids of event frames.
pub fn ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["id"].as_u64().expect("event id")).collect()
}
