//! The soak's subscribers: WebSocket, SSE and long-poll connections that come and go, resume where they were,
//! sometimes stop reading until the hub cuts them, and check every event against the [`Truth`].

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use rand::rngs::SmallRng;
use serde::Deserialize;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::truth::{Filter, Kind, Meta, Segment};
use super::{Context, Stats};
use crate::client::{SOURCE_ADDRESSES, connect_with_buffer, now_ns};

/// After a connection failed, a client waits a random time up to `BACKOFF × 2^attempt`, at most `MAX_BACKOFF`
/// (full jitter, as the JavaScript client does), so that thousands of clients of a hub that went away do not come
/// back in one wave, nor keep a recovering log overloaded.
const BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Bytes a slow consumer's socket buffers, so that the hub's outbound bound is what fills.
const SLOW_RECV_BUFFER: u32 = 4096;

/// An event or control frame as every transport writes it (the envelope's fields, and the frames' own). Strings are
/// borrowed from the text when they hold no escape: the soak parses every frame it gets, ~17,000 a second.
#[derive(Debug, Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    id: Option<u64>,
    #[serde(borrow)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow)]
    scope: Option<Scope<'a>>,
    payload: Option<Payload>,
    head: Option<u64>,
    last_id: Option<u64>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Scope<'a> {
    #[serde(borrow)]
    project_id: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    i: u64,
    t: u64,
}

/// The event a frame carries: id, event index, routing, send time.
fn event_of(frame: &Frame) -> Option<(u64, u64, Meta, u64)> {
    let topic = frame.topic.as_deref()?.strip_prefix("soak.t")?.parse().ok()?;
    let project = frame.scope.as_ref()?.project_id.as_deref()?.strip_prefix('p')?.parse().ok()?;
    let payload = frame.payload.as_ref()?;
    Some((frame.id?, payload.i, Meta { topic, project }, payload.t))
}

/// What a client is, for its whole life (across its connections).
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub client: u64,
    pub kind: Kind,
    pub filter: Filter,
    /// Stops reading for a while on each connection, until the hub cuts it (WebSocket only).
    pub slow: bool,
    /// Subscribes with a frame instead of the query string (WebSocket only).
    pub by_frame: bool,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Its lifetime ran out (or the run stopped): the client closed it.
    Closed,
    /// The hub cut it as a slow consumer.
    SlowConsumer,
    /// The hub went away, the network failed, or the connection could not be made.
    Dropped(String),
}

/// One connection's bookkeeping: the segment it fills and the checks on each event.
struct Reader<'a> {
    ctx: &'a Context,
    segment: Segment,
    last: u64,
    /// Events arrive live (not replayed): their latency is recorded.
    live: bool,
    /// A slow consumer's latency is its own doing: never recorded.
    slow: bool,
}

impl<'a> Reader<'a> {
    fn new(ctx: &'a Context, plan: &Plan, hub: usize, start: u64, live: bool) -> Self {
        let segment = Segment::new(plan.client, plan.kind, hub, plan.filter, start);
        Self { ctx, segment, last: start, live, slow: plan.slow }
    }

    fn event(&mut self, frame: &Frame) {
        let Some((id, _i, meta, sent_ns)) = event_of(frame) else {
            self.ctx.truth.violation(
                format!("an event frame the soak did not publish: {frame:?}"),
                Some(&self.segment),
                vec![],
            );
            return;
        };
        if id <= self.last {
            let what = format!("out of order or repeated: id {id} after {}", self.last);
            self.ctx.truth.violation(what, Some(&self.segment), vec![self.last, id]);
            return;
        }
        if !self.segment.filter.matches(meta) {
            let what = format!("an event the subscription did not ask for: {meta:?}");
            self.ctx.truth.violation(what, Some(&self.segment), vec![id]);
        }
        self.last = id;
        self.segment.ids.push(id);
        self.segment.through = self.segment.through.max(id);
        self.ctx.stats.deliveries.fetch_add(1, Ordering::Relaxed);
        if self.live && !self.slow {
            self.ctx.record_latency(now_ns().saturating_sub(sent_ns));
        }
    }

    /// Everything up to `through` has been delivered (a `live` frame, a long-poll answer).
    fn complete_to(&mut self, through: u64) {
        self.segment.through = self.segment.through.max(through);
        self.last = self.last.max(through);
    }

    /// A `reset`: what came before is closed; the connection goes on from `head`.
    fn reset(&mut self, head: u64) {
        self.ctx.stats.resets.fetch_add(1, Ordering::Relaxed);
        self.ctx.truth.reset(&self.segment, self.last, head);
        let next = Segment::new(self.segment.client, self.segment.kind, self.segment.hub, self.segment.filter, head);
        self.ctx.truth.closed(std::mem::replace(&mut self.segment, next));
        self.last = head;
    }

    /// Closes the segment; returns the position to resume from.
    fn finish(self) -> u64 {
        let through = self.segment.through;
        self.ctx.truth.closed(self.segment);
        through
    }
}

/// One client's life: connections one after another until its lifetime is over, resuming after each drop.
pub async fn run(ctx: Arc<Context>, plan: Plan, lifetime: Duration, mut rng: SmallRng) {
    let deadline = Instant::now() + lifetime;
    let start_live = plan.kind == Kind::Ws && rng.random_bool(0.5);
    let mut since =
        (!start_live).then(|| ctx.truth.watermark().saturating_sub(rng.random_range(0..200)).max(ctx.truth.floor()));
    let mut reconnecting = false;
    let mut attempt = 0u32;
    loop {
        let hub = rng.random_range(0..ctx.hubs.len());
        let source = rng.random_range(0..SOURCE_ADDRESSES as usize);
        ctx.stats.connects.fetch_add(1, Ordering::Relaxed);
        let open = ctx.stats.open(plan.kind);
        open.fetch_add(1, Ordering::Relaxed);
        let (end, through) = match plan.kind {
            Kind::Ws => websocket(&ctx, &plan, hub, source, since, deadline, &mut rng, &mut reconnecting).await,
            Kind::Sse => sse(&ctx, &plan, hub, source, since.unwrap_or(0), deadline, &mut reconnecting).await,
            Kind::Poll => poll(&ctx, &plan, hub, source, since.unwrap_or(0), deadline, &mut reconnecting).await,
        };
        open.fetch_sub(1, Ordering::Relaxed);
        if let Some(through) = through {
            since = Some(through);
        }
        match end {
            End::Closed if Instant::now() >= deadline || ctx.stopping() => break,
            End::Closed => {}
            End::SlowConsumer => {
                ctx.stats.slow_cuts.fetch_add(1, Ordering::Relaxed);
            }
            End::Dropped(_) => {
                if ctx.stopping() {
                    break;
                }
                ctx.stats.drops.fetch_add(1, Ordering::Relaxed);
                if reconnecting {
                    // The last attempt did not get back: wait longer before the next.
                    attempt = (attempt + 1).min(10);
                } else {
                    attempt = 0;
                    reconnecting = true;
                    ctx.stats.reconnecting.fetch_add(1, Ordering::Relaxed);
                }
                let cap = BACKOFF.saturating_mul(1 << attempt).min(MAX_BACKOFF);
                tokio::time::sleep(cap.mul_f64(rng.random::<f64>())).await;
            }
        }
        ctx.stats.resumes.fetch_add(1, Ordering::Relaxed);
    }
    if reconnecting {
        ctx.stats.reconnecting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Marks a dropped client as back: subscribed and reading again.
fn back(stats: &Stats, reconnecting: &mut bool) {
    if std::mem::take(reconnecting) {
        stats.reconnecting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn websocket(
    ctx: &Context,
    plan: &Plan,
    hub: usize,
    source: usize,
    since: Option<u64>,
    deadline: Instant,
    rng: &mut SmallRng,
    reconnecting: &mut bool,
) -> (End, Option<u64>) {
    let query = plan.filter.query();
    let path = match (plan.by_frame, since) {
        (true, _) => "/ws".to_owned(),
        (false, Some(since)) => format!("/ws?{query}&since={since}"),
        (false, None) => format!("/ws?{query}"),
    };
    let buffer = plan.slow.then_some(SLOW_RECV_BUFFER);
    let mut ws =
        match timeout(Duration::from_secs(10), connect_with_buffer(&ctx.hubs[hub], &path, source, buffer)).await {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => return (End::Dropped(e.to_string()), None),
            Err(_) => return (End::Dropped("connect timed out".into()), None),
        };
    if plan.by_frame {
        let mut subscribe = serde_json::json!({"op": "subscribe", "sub": "default", "topics": [plan.filter.topics()]});
        if let Some(project) = plan.filter.project {
            subscribe["filter"] = serde_json::json!({"project_id": format!("p{project}")});
        }
        if let Some(since) = since {
            subscribe["since"] = since.into();
        }
        if let Err(e) = ws.send(Message::text(subscribe.to_string())).await {
            return (End::Dropped(e.to_string()), None);
        }
    }
    // A slow consumer reads for a moment, then stops reading once, for longer than the hub's bound can hold.
    let mut stall_at = plan.slow.then(|| Instant::now() + Duration::from_millis(rng.random_range(500..3000)));
    let mut reader: Option<Reader> = None;
    // One timer for the connection's life, not one armed and cancelled around every frame.
    let end_of_life = tokio::time::sleep_until(deadline.min(ctx.run_end));
    tokio::pin!(end_of_life);
    let end = loop {
        if reader.is_some() && stall_at.is_some_and(|at| Instant::now() >= at) {
            stall_at = None;
            tokio::time::sleep(ctx.slow_stall).await;
        }
        if ctx.stopping() {
            break End::Closed;
        }
        let next = tokio::select! {
            biased;
            next = ws.next() => next,
            () = &mut end_of_life => break End::Closed,
        };
        let message = match next {
            None => break End::Dropped("the connection ended without a close frame".into()),
            Some(Err(e)) => break End::Dropped(e.to_string()),
            Some(Ok(message)) => message,
        };
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                let code = frame.map(|f| f.code);
                break if code == Some(CloseCode::Library(4008)) {
                    End::SlowConsumer
                } else {
                    End::Dropped(format!("closed by the hub: {code:?}"))
                };
            }
            _ => continue,
        };
        let frame: Frame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                ctx.truth.violation(format!("a frame that is not JSON ({e}): {}", text.as_str()), None, vec![]);
                continue;
            }
        };
        match frame.kind.as_deref() {
            Some("subscribed") => {
                let head = frame.head.unwrap_or(0);
                // Live only: everything after the head it was told. With a resume point: everything after that.
                reader = Some(Reader::new(ctx, plan, hub, since.unwrap_or(head), since.is_none()));
                back(&ctx.stats, reconnecting);
            }
            Some("event") => match reader.as_mut() {
                Some(reader) => reader.event(&frame),
                None => ctx.truth.violation("an event before subscribed".into(), None, frame.id.into_iter().collect()),
            },
            Some("live") => {
                if let Some(reader) = reader.as_mut() {
                    reader.live = true;
                    reader.complete_to(frame.last_id.unwrap_or(0));
                }
            }
            Some("reset") => {
                if let Some(reader) = reader.as_mut() {
                    reader.reset(frame.head.unwrap_or(0));
                }
            }
            // The log failed under the subscription, which the hub removed: resubscribe from where it stood, as
            // the frame says. Any other error is a frame the hub should not have sent this client.
            Some("error") if frame.code.as_deref() == Some("internal") => {
                break End::Dropped(format!("the subscription failed: {:?}", frame.message));
            }
            Some("error") => {
                let what = format!("an error frame: {:?} {:?}", frame.code, frame.message);
                ctx.truth.violation(what, reader.as_ref().map(|r| &r.segment), vec![]);
            }
            _ => {}
        }
    };
    if end == End::Closed {
        let _ = ws.close(None).await;
    }
    let through = reader.map(Reader::finish);
    (end, through)
}

/// An HTTP client whose connections leave from source address 127.0.0.(1 + n).
pub fn http_client(source: u8) -> reqwest::Client {
    let address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + source));
    reqwest::Client::builder()
        .local_address(address)
        .connect_timeout(Duration::from_secs(5))
        .build()
        // Only a TLS back-end can fail to build, and this client has none.
        .expect("a plain HTTP client builds")
}

async fn sse(
    ctx: &Context,
    plan: &Plan,
    hub: usize,
    source: usize,
    since: u64,
    deadline: Instant,
    reconnecting: &mut bool,
) -> (End, Option<u64>) {
    let url = format!("{}/sse?{}", ctx.hubs[hub], plan.filter.query());
    let request = ctx.http(source).get(url).header("Last-Event-ID", since.to_string()).send();
    let response = match timeout(Duration::from_secs(10), request).await {
        Ok(Ok(response)) if response.status().is_success() => response,
        Ok(Ok(response)) => return (End::Dropped(format!("SSE answered {}", response.status())), None),
        Ok(Err(e)) => return (End::Dropped(e.to_string()), None),
        Err(_) => return (End::Dropped("SSE timed out".into()), None),
    };
    back(&ctx.stats, reconnecting);
    let mut reader = Reader::new(ctx, plan, hub, since, false);
    let mut stream = response.bytes_stream();
    let mut parser = SseParser::default();
    let end_of_life = tokio::time::sleep_until(deadline.min(ctx.run_end));
    tokio::pin!(end_of_life);
    let end = loop {
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            () = &mut end_of_life => break End::Closed,
        };
        let chunk = match next {
            None => break End::Dropped("the SSE stream ended".into()),
            Some(Err(e)) => break End::Dropped(e.to_string()),
            Some(Ok(chunk)) => chunk,
        };
        parser.feed(&chunk, &mut reader);
    };
    (end, Some(reader.finish()))
}

/// Reads an SSE stream's bytes as they come: `event:` and `data:` lines, an event at each blank line.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    name: String,
    data: String,
}

impl SseParser {
    fn feed(&mut self, bytes: &[u8], reader: &mut Reader) {
        self.pending.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(newline) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.pending[start..start + newline]);
            start += newline + 1;
            if line.is_empty() {
                if !self.data.is_empty() {
                    self.dispatch(reader);
                }
                self.name.clear();
                self.data.clear();
            } else if let Some(value) = line.strip_prefix("event:") {
                self.name.clear();
                self.name.push_str(value.trim());
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data.push_str(value.trim_start());
            }
        }
        self.pending.drain(..start);
    }

    fn dispatch(&self, reader: &mut Reader) {
        match serde_json::from_str::<Frame>(&self.data) {
            Ok(frame) if self.name == "reset" => reader.reset(frame.head.unwrap_or(0)),
            Ok(frame) => reader.event(&frame),
            Err(e) => {
                let what = format!("SSE data that is not JSON ({e}): {}", self.data);
                reader.ctx.truth.violation(what, Some(&reader.segment), vec![]);
            }
        }
    }
}

/// An SSE stream read from a process's output (`curl -N`): the storm stops the process (SIGSTOP) to make it a
/// slow consumer. Returns the position to resume from once the output ends.
pub async fn sse_from_process(
    ctx: &Context,
    client: u64,
    hub: usize,
    since: u64,
    mut output: impl tokio::io::AsyncRead + Unpin,
) -> u64 {
    use tokio::io::AsyncReadExt;
    let plan = Plan { client, kind: Kind::Sse, filter: Filter::ALL, slow: true, by_frame: false };
    let mut reader = Reader::new(ctx, &plan, hub, since, false);
    let mut parser = SseParser::default();
    let mut buffer = vec![0; 64 * 1024];
    while let Ok(n) = output.read(&mut buffer).await
        && n > 0
    {
        parser.feed(&buffer[..n], &mut reader);
    }
    reader.finish()
}

/// A long-poll answer, borrowing from its body.
#[derive(Debug, Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    events: Vec<Frame<'a>>,
    next_after: u64,
    reset: Option<serde::de::IgnoredAny>,
}

/// One long-poll request from `after`: the answer's body, read by [`parse_answer`].
async fn poll_once(
    client: &reqwest::Client,
    hub: &str,
    filter: Filter,
    after: u64,
    wait_s: u64,
) -> Result<bytes::Bytes, String> {
    let url = format!("{hub}/api/events?{}&after={after}&limit=500&wait={wait_s}", filter.query());
    let response = client.get(url).timeout(Duration::from_secs(wait_s + 10)).send().await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("long-poll answered {}", response.status()));
    }
    response.bytes().await.map_err(|e| e.to_string())
}

fn parse_answer(body: &[u8]) -> Result<Answer<'_>, String> {
    serde_json::from_slice(body).map_err(|e| format!("a long-poll answer that is not one: {e}"))
}

async fn poll(
    ctx: &Context,
    plan: &Plan,
    hub: usize,
    source: usize,
    since: u64,
    deadline: Instant,
    reconnecting: &mut bool,
) -> (End, Option<u64>) {
    let client = ctx.http(source);
    let mut reader = Reader::new(ctx, plan, hub, since, false);
    let mut after = since;
    let end = loop {
        let body = match timeout_at(deadline.min(ctx.run_end), poll_once(client, &ctx.hubs[hub], plan.filter, after, 5))
            .await
        {
            Err(_) => break End::Closed,
            Ok(Err(e)) => break End::Dropped(e),
            Ok(Ok(body)) => body,
        };
        let answer = match parse_answer(&body) {
            Ok(answer) => answer,
            Err(e) => break End::Dropped(e),
        };
        back(&ctx.stats, reconnecting);
        if answer.reset.is_some() {
            reader.reset(answer.next_after);
        }
        for frame in &answer.events {
            reader.event(frame);
        }
        reader.complete_to(answer.next_after);
        after = answer.next_after.max(after);
    };
    (end, Some(reader.finish()))
}

/// An auditor: a long-poll cursor over every topic, on hub `auditor` (another when that one is down), feeding the
/// truth until `stop` is set. Its own answers are checked as segments too, so auditors check each other.
pub async fn audit(ctx: Arc<Context>, auditor: usize, stop: Arc<AtomicBool>) {
    let client = ctx.http(auditor);
    let mut after = 0;
    let mut hub = auditor % ctx.hubs.len();
    while !stop.load(Ordering::Relaxed) {
        let body = poll_once(client, &ctx.hubs[hub], Filter::ALL, after, 1).await;
        let answer = match body.as_deref().map_err(Clone::clone).and_then(parse_answer) {
            Ok(answer) => answer,
            Err(_) => {
                hub = (hub + 1) % ctx.hubs.len();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut segment = Segment::new(u64::MAX - auditor as u64, Kind::Poll, hub, Filter::ALL, after);
        let reset = answer.reset.is_some().then_some((after, answer.next_after));
        if reset.is_some() {
            ctx.truth.reset(&segment, after, answer.next_after);
            segment.start = answer.next_after;
        }
        let mut events = Vec::with_capacity(answer.events.len());
        let mut last = segment.start;
        for frame in &answer.events {
            match event_of(frame) {
                Some((id, i, meta, _)) if id > last => {
                    events.push((id, i, meta));
                    segment.ids.push(id);
                    last = id;
                }
                _ => ctx.truth.violation(format!("an auditor read {frame:?} after id {last}"), Some(&segment), vec![]),
            }
        }
        segment.through = answer.next_after.max(last);
        ctx.truth.audited(auditor, &events, segment.through, reset);
        ctx.truth.closed(segment);
        after = after.max(answer.next_after);
    }
}
