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
    try_spawn_hub(configure).await.unwrap_or_else(|e| panic!("the hub starts: {e}"))
}

/// As [`spawn_hub`], answering why the hub refused to start.
pub async fn try_spawn_hub(configure: impl FnOnce(&mut Settings)) -> Result<TestHub, String> {
    // Hub logs go to the test's captured output; `RUST_LOG` picks what (default: warnings).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    let mut settings = Settings {
        bind: "127.0.0.1:0".into(),
        workers: Some(1),
        node_id: Some("test-node".into()),
        ..Settings::default()
    };
    configure(&mut settings);
    let app = Application::build(settings).await.map_err(|e| format!("{e:#}"))?;
    let port = app.port();
    let shutdown = app.shutdown();
    actix_web::rt::spawn(app.run_until_stopped(false));
    Ok(TestHub { port, http: reqwest::Client::new(), shutdown })
}

/// Starts a hub on the Redis log at `url` under the key prefix `prefix`.
pub async fn spawn_redis_hub(url: &str, prefix: &str, configure: impl FnOnce(&mut Settings)) -> TestHub {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    spawn_hub(move |s| {
        s.backend = Some(Backend::Redis);
        s.redis_url = Some(url);
        s.redis_prefix = prefix;
        configure(s);
    })
    .await
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
        ws_at(self.port, path).await
    }

    /// Opens a WebSocket without reading anything; the error carries the HTTP answer of a refused upgrade.
    pub async fn ws_raw(&self, path: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        self.ws_with_token(path, None).await
    }

    /// Opens a WebSocket sending `token` as `Authorization: Bearer`.
    pub async fn ws_with_token(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://127.0.0.1:{}{path}", self.port).into_client_request()?;
        if let Some(token) = token {
            request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (stream, _) = tokio_tungstenite::connect_async(request).await?;
        Ok(WsClient { stream })
    }

    /// A GET with an optional bearer token: the status and the body as JSON (or `null` when it is not JSON).
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A publish with an optional bearer token: the status and the JSON answer.
    pub async fn publish_as(&self, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request =
            self.http.post(self.url("/api/publish")).header("content-type", "application/json").body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    /// Opens an SSE stream at `path` with optional headers.
    pub async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut request = self.http.get(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status(), 200, "SSE refused");
        SseClient { response: Some(response), buffer: String::new() }
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

    /// Stops the hub as a SIGTERM would, and waits until it has.
    pub async fn stop(self) {
        self.shutdown.begin().await;
    }

    /// Starts the graceful shutdown a SIGTERM would start, without waiting for it to finish.
    pub fn begin_shutdown(&self) {
        let shutdown = self.shutdown.clone();
        actix_web::rt::spawn(async move { shutdown.begin().await });
    }
}

/// Opens a WebSocket to `path` on a hub at `port` (in this process or not) and reads the welcome frame.
pub async fn ws_at(port: u16, path: &str) -> WsClient {
    let url = format!("ws://127.0.0.1:{port}{path}");
    let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("the WebSocket upgrade succeeds");
    let mut client = WsClient { stream };
    let welcome = client.next_json().await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    client
}

/// One block of an SSE stream.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseBlock {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comment: Option<String>,
}

impl SseBlock {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("a data line")).expect("data is JSON")
    }
}

/// Reads an SSE response block by block.
pub struct SseClient {
    response: Option<reqwest::Response>,
    buffer: String,
}

impl SseClient {
    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        self.response.as_ref().expect("open").headers()
    }

    /// The next block, or `None` when the stream ended or nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseBlock> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut block = SseBlock::default();
                for line in raw.lines().filter(|l| !l.is_empty()) {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    let value = Some(value.to_owned());
                    match field {
                        "id" => block.id = value,
                        "event" => block.event = value,
                        "data" => block.data = value,
                        "retry" => block.retry = value,
                        "" => block.comment = Some(line.trim_start_matches(": ").to_owned()),
                        other => panic!("unknown SSE field {other:?}"),
                    }
                }
                return Some(block);
            }
            let response = self.response.as_mut()?;
            match tokio::time::timeout_at(deadline, response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                Ok(_) => {
                    self.response = None;
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// The next event block (skipping `retry:` and comments), failing on timeout or end.
    pub async fn next_event(&mut self) -> SseBlock {
        loop {
            let block = self.next_within(FRAME_TIMEOUT).await.expect("an SSE block");
            if block.event.is_some() {
                return block;
            }
        }
    }

    /// Whether the stream ends within `wait` (skipping whatever comes before).
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.next_within(deadline - tokio::time::Instant::now()).await.is_none() {
                return self.response.is_none();
            }
        }
        false
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
    /// Wraps a WebSocket opened by the test itself (with headers of its own).
    pub fn from_stream(stream: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { stream }
    }

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
