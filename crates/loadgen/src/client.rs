//! WebSocket, SSE and long-poll clients, and payloads.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};

pub type Ws = WebSocketStream<TcpStream>;

/// Source addresses used round-robin, so one machine can open more connections than one address has ports.
pub const SOURCE_ADDRESSES: u8 = 8;

/// `http://host:port` → `host:port` as a socket address.
pub fn socket_addr(hub: &str) -> anyhow::Result<SocketAddr> {
    let authority = hub.trim_start_matches("http://").trim_start_matches("ws://").trim_end_matches('/');
    std::net::ToSocketAddrs::to_socket_addrs(authority)?.next().context("the hub address resolves to nothing")
}

/// Opens a WebSocket to `hub` + `path` from source address 127.0.0.(1 + n % 8).
pub async fn connect(hub: &str, path: &str, n: usize) -> anyhow::Result<Ws> {
    connect_with_buffer(hub, path, n, None).await
}

/// [`connect`], with the socket's receive buffer set to `recv_buffer` bytes when given (a slow consumer whose
/// kernel buffers little, so that what it does not read stays in the hub's outbound queue).
pub async fn connect_with_buffer(hub: &str, path: &str, n: usize, recv_buffer: Option<u32>) -> anyhow::Result<Ws> {
    let addr = socket_addr(hub)?;
    let stream = connect_tcp(addr, n, recv_buffer).await?;
    let url = format!("ws://{addr}{path}");
    // tungstenite reads into 128 KiB by default: 8 KiB keeps thousands of connections small.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (ws, _) =
        client_async_with_config(url, stream, Some(config)).await.context("the WebSocket handshake failed")?;
    Ok(ws)
}

/// A TCP connection to `addr` from source address 127.0.0.(1 + n % 8) when `addr` is on loopback.
async fn connect_tcp(addr: SocketAddr, n: usize, recv_buffer: Option<u32>) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(bytes) = recv_buffer {
        socket.set_recv_buffer_size(bytes)?;
    }
    if addr.ip().is_loopback() {
        let source = Ipv4Addr::new(127, 0, 0, 1 + (n % SOURCE_ADDRESSES as usize) as u8);
        socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How `fanout` subscribers connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Ws,
    /// Server-Sent Events: the hub's `/sse`, Nchan's EventSource on `/sub/<channel>`.
    Sse,
    /// Long-poll: the hub's `/api/events`, Nchan's long-poll on `/sub/<channel>` (its channel keeps messages, so
    /// that what is published between two polls is there for the next).
    Poll,
}

/// A subscriber of either transport.
pub enum Subscriber {
    Ws(Box<Ws>),
    Sse(Sse),
    Poll(Poll),
}

impl Subscriber {
    /// The next text frame (WebSocket) or event block (SSE); `None` once the connection ends or fails.
    /// Cancel-safe: what was read stays buffered for the next call.
    pub async fn next_text(&mut self) -> Option<Utf8Bytes> {
        match self {
            Subscriber::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Text(text)) => return Some(text),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            },
            Subscriber::Sse(sse) => sse.next_block().await,
            Subscriber::Poll(poll) => poll.next_event().await,
        }
    }
}

/// An SSE stream read off a plain TCP connection: one HTTP/1.1 request, the body split into event blocks.
pub struct Sse {
    stream: TcpStream,
    /// What was read and not yet decoded.
    raw: BytesMut,
    /// The body, decoded (chunked transfer encoding undone), not yet split into blocks.
    body: BytesMut,
    chunked: bool,
}

impl Sse {
    /// Sends `GET path` for `text/event-stream` and reads the response's head; fails unless it is a 200.
    pub async fn open(base: &str, path: &str, n: usize) -> anyhow::Result<Self> {
        let addr = socket_addr(base)?;
        let mut stream = connect_tcp(addr, n, None).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(end) = find(&raw, b"\r\n\r\n") {
                break end;
            }
            anyhow::ensure!(stream.read_buf(&mut raw).await? > 0, "the SSE connection closed before its response");
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
        let status = head.lines().next().unwrap_or_default().to_owned();
        anyhow::ensure!(status.starts_with("http/1.1 200"), "the SSE request was answered {status}");
        let chunked = head.lines().any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
        let _head = raw.split_to(head_end + 4);
        Ok(Self { stream, raw, body: BytesMut::new(), chunked })
    }

    /// The next event block, up to and with its blank line; `None` once the stream ends or breaks.
    async fn next_block(&mut self) -> Option<Utf8Bytes> {
        loop {
            if !self.decode() {
                return None;
            }
            if let Some(end) = find(&self.body, b"\n\n") {
                return Utf8Bytes::try_from(self.body.split_to(end + 2)).ok();
            }
            match self.stream.read_buf(&mut self.raw).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Moves what `raw` holds of the body into `body`; `false` on a malformed chunk.
    fn decode(&mut self) -> bool {
        if !self.chunked {
            let raw = self.raw.split();
            self.body.extend_from_slice(&raw);
            return true;
        }
        while let Some(line_end) = find(&self.raw, b"\r\n") {
            let size_field = String::from_utf8_lossy(&self.raw[..line_end]);
            let Ok(size) = usize::from_str_radix(size_field.split(';').next().unwrap_or_default().trim(), 16) else {
                return false;
            };
            if self.raw.len() < line_end + 2 + size + 2 {
                break;
            }
            let _size_line = self.raw.split_to(line_end + 2);
            let chunk = self.raw.split_to(size);
            self.body.extend_from_slice(&chunk);
            let _crlf = self.raw.split_to(2);
        }
        true
    }
}

/// A long-poll subscriber on one keep-alive HTTP/1.1 connection, one request outstanding at a time. The hub's
/// answers hold several events (`{"events":[…],"next_after":N}`); Nchan's one message each, the next asked for with
/// the `Last-Modified` and `Etag` of the last as `If-Modified-Since` and `If-None-Match`.
pub struct Poll {
    peer: Peer,
    stream: TcpStream,
    host: SocketAddr,
    /// The request's path; the hub's position goes after it as `&after=N`.
    path: String,
    raw: BytesMut,
    /// The hub's `next_after`.
    after: u64,
    /// Nchan's position: the last answer's `Last-Modified` and `Etag`.
    since: Option<(String, String)>,
    in_flight: bool,
    /// Events of the last answer not handed out yet.
    ready: VecDeque<Utf8Bytes>,
}

/// A long-poll answer: status, the two headers Nchan's position is made of, and the body.
struct PollAnswer {
    status: u16,
    last_modified: Option<String>,
    etag: Option<String>,
    body: BytesMut,
}

impl Poll {
    /// Connects and sends the first request, so that the subscriber waits on the server when this returns.
    pub async fn open(peer: Peer, base: &str, path: String, n: usize) -> anyhow::Result<Self> {
        let host = socket_addr(base)?;
        let stream = connect_tcp(host, n, None).await?;
        let mut poll = Self {
            peer,
            stream,
            host,
            path,
            raw: BytesMut::with_capacity(4096),
            after: 0,
            since: None,
            in_flight: false,
            ready: VecDeque::new(),
        };
        poll.ask().await?;
        Ok(poll)
    }

    async fn ask(&mut self) -> anyhow::Result<()> {
        let request = match (self.peer, &self.since) {
            (Peer::Hub, _) => format!("GET {}&after={} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.after, self.host),
            (Peer::Nchan, None) => format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", self.path, self.host),
            (Peer::Nchan, Some((modified, etag))) => format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nIf-Modified-Since: {modified}\r\nIf-None-Match: {etag}\r\n\r\n",
                self.path, self.host
            ),
        };
        self.stream.write_all(request.as_bytes()).await?;
        self.in_flight = true;
        Ok(())
    }

    /// The next event; `None` once the connection ends or an answer is not understood. Cancel-safe while it
    /// waits for an answer (what was read stays buffered), not while it writes a request.
    async fn next_event(&mut self) -> Option<Utf8Bytes> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(event);
            }
            if !self.in_flight {
                self.ask().await.ok()?;
            }
            let answer = loop {
                if let Some(answer) = self.answer().ok()? {
                    break answer;
                }
                match self.stream.read_buf(&mut self.raw).await {
                    Ok(n) if n > 0 => {}
                    _ => return None,
                }
            };
            self.in_flight = false;
            self.take(answer).ok()?;
        }
    }

    /// Splits one whole answer off what was read, if it is all there.
    fn answer(&mut self) -> anyhow::Result<Option<PollAnswer>> {
        let Some(head_end) = find(&self.raw, b"\r\n\r\n") else { return Ok(None) };
        let head = String::from_utf8_lossy(&self.raw[..head_end]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .context("a long-poll answer without a status")?;
        let (mut length, mut last_modified, mut etag) = (None, None, None);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else { continue };
            let value = value.trim().to_owned();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "last-modified" => last_modified = Some(value),
                "etag" => etag = Some(value),
                "transfer-encoding" => anyhow::bail!("a long-poll answer in {value} transfer encoding"),
                _ => {}
            }
        }
        let length = length.unwrap_or(0);
        if self.raw.len() < head_end + 4 + length {
            return Ok(None);
        }
        let _head = self.raw.split_to(head_end + 4);
        Ok(Some(PollAnswer { status, last_modified, etag, body: self.raw.split_to(length) }))
    }

    /// Queues an answer's events and moves the position past them.
    fn take(&mut self, answer: PollAnswer) -> anyhow::Result<()> {
        match (self.peer, answer.status) {
            (Peer::Hub, 200) => {
                #[derive(serde::Deserialize)]
                struct Page<'a> {
                    #[serde(borrow)]
                    events: Vec<&'a serde_json::value::RawValue>,
                    next_after: u64,
                }
                let page: Page = serde_json::from_slice(&answer.body)?;
                self.after = page.next_after;
                self.ready.extend(page.events.iter().map(|e| Utf8Bytes::from(e.get().to_owned())));
            }
            (Peer::Nchan, 200) => {
                self.since = Some((
                    answer.last_modified.context("a Nchan message without Last-Modified")?,
                    answer.etag.context("a Nchan message without an Etag")?,
                ));
                self.ready.push_back(Utf8Bytes::try_from(answer.body.freeze())?);
            }
            // Nchan's subscriber timeout: ask again from the same position.
            (Peer::Nchan, 304 | 408) => {}
            (_, status) => anyhow::bail!("a long-poll answered {status}"),
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What the load generator drives: the hub, or Nchan (nginx + nchan) as the peer it is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Peer {
    #[default]
    Hub,
    /// Subscribers on WebSocket `/sub/<channel>`, one event per `POST /pub/<channel>`; the channel is the topic.
    Nchan,
}

impl Peer {
    /// Where a subscriber to `topic` connects: the hub's `endpoint` (`ws`, `sse`, `api/events`) filtered on `project_id` when
    /// given, or Nchan's channel (which has no filters).
    fn subscriber_path(self, endpoint: &str, topic: &str, project: Option<&str>) -> anyhow::Result<String> {
        match self {
            Peer::Hub => Ok(match project {
                Some(project) => format!("/{endpoint}?topics={topic}&project_id={project}"),
                None => format!("/{endpoint}?topics={topic}"),
            }),
            Peer::Nchan => {
                anyhow::ensure!(project.is_none(), "Nchan has no filters: use --projects 0");
                Ok(format!("/sub/{topic}"))
            }
        }
    }

    /// Opens a subscriber to `topic` (with the hub, filtered on `project_id` when given) and waits until it is
    /// registered: the hub's `subscribed` frame; Nchan registers a WebSocket subscriber at the handshake.
    pub async fn subscribe(self, base: &str, topic: &str, project: Option<&str>, n: usize) -> anyhow::Result<Ws> {
        let mut ws = connect(base, &self.subscriber_path("ws", topic, project)?, n).await?;
        if self == Peer::Hub {
            wait_for(&mut ws, "subscribed").await?;
        }
        Ok(ws)
    }

    /// [`Peer::subscribe`] over `transport`. The hub answers an SSE request once the subscription is in place;
    /// Nchan registers an EventSource subscriber at the request.
    pub async fn subscriber(
        self,
        transport: Transport,
        base: &str,
        topic: &str,
        project: Option<&str>,
        n: usize,
    ) -> anyhow::Result<Subscriber> {
        Ok(match transport {
            Transport::Ws => Subscriber::Ws(Box::new(self.subscribe(base, topic, project, n).await?)),
            Transport::Sse => Subscriber::Sse(Sse::open(base, &self.subscriber_path("sse", topic, project)?, n).await?),
            Transport::Poll => {
                Subscriber::Poll(Poll::open(self, base, self.subscriber_path("api/events", topic, project)?, n).await?)
            }
        })
    }

    /// Publishes `events` (objects with `topic` and `payload`): the hub takes them in one request, Nchan one
    /// request per event with the payload as the message, on a channel that keeps its messages for a minute when
    /// `keep` (long-poll subscribers ask for each message after the last), else one that keeps none.
    pub async fn publish(
        self,
        client: &reqwest::Client,
        base: &str,
        events: &[serde_json::Value],
        keep: bool,
    ) -> anyhow::Result<()> {
        let base = base.trim_end_matches('/');
        match self {
            Peer::Hub => {
                // A 503 (the log unavailable for a moment: a failover, a leader election) is retried for up to 30 s,
                // as a service would; without idempotency keys a retry may double an event, which the run reports.
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    let response = client.post(format!("{base}/api/publish")).json(events).send().await?;
                    let status = response.status();
                    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                    anyhow::ensure!(status.is_success(), "publish answered {status}");
                    break;
                }
            }
            Peer::Nchan => {
                let location = if keep { "pub-kept" } else { "pub" };
                for event in events {
                    let topic = event["topic"].as_str().context("an event without a topic")?;
                    let response = client
                        .post(format!("{base}/{location}/{topic}"))
                        .body(event["payload"].to_string())
                        .send()
                        .await?;
                    anyhow::ensure!(response.status().is_success(), "Nchan publish answered {}", response.status());
                }
            }
        }
        Ok(())
    }
}

/// Reads until a text frame whose `type` is `kind` (skipping others); fails on close.
pub async fn wait_for(ws: &mut Ws, kind: &str) -> anyhow::Result<String> {
    let marker = format!(r#""type":"{kind}""#);
    while let Some(message) = ws.next().await {
        if let Message::Text(text) = message?
            && text.as_str().contains(&marker)
        {
            return Ok(text.as_str().to_owned());
        }
    }
    anyhow::bail!("the connection closed before a {kind} frame")
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// A benchmark payload: `{"b": padding, "i": index, "t": send time in ns}`, about `size` bytes serialized.
pub fn payload(index: u64, size: usize) -> serde_json::Value {
    let pad = size.saturating_sub(48);
    serde_json::json!({"b": "x".repeat(pad), "i": index, "t": now_ns()})
}

/// The `i` and `t` of a benchmark event frame, read without parsing the whole frame (the payload's keys are
/// sorted, so they come last).
pub fn index_and_time(frame: &str) -> Option<(u64, u64)> {
    let number_after = |key: &str| -> Option<u64> {
        let start = frame.rfind(key)? + key.len();
        let digits: &str = &frame[start..];
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..end].parse().ok()
    };
    Some((number_after(r#""i":"#)?, number_after(r#""t":"#)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_time_are_read_from_an_event_frame() {
        let frame = r#"{"type":"event","sub":"default","id":7,"topic":"bench","payload":{"b":"xx","i":41,"t":1700000000123456789},"ts":"x","v":1}"#;
        assert_eq!(index_and_time(frame), Some((41, 1_700_000_000_123_456_789)));
        assert_eq!(index_and_time(r#"{"type":"pong"}"#), None);
    }

    #[test]
    fn payloads_are_about_the_asked_size() {
        let len = serde_json::to_string(&payload(12345, 100)).unwrap().len();
        assert!((90..=110).contains(&len), "{len}");
    }
}
