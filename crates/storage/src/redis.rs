//! The Redis event log: a Redis Stream shared by any number of hubs.
//!
//! Ids are the hub's integers, never Redis' `ms-seq` strings: each append runs one Lua script that takes the next
//! ids from a counter and writes every event of the batch as the stream entry `<id>-0`, atomically. Scripts run
//! one at a time, so ids are dense and become visible in id order, and a reader that has seen id N never sees a
//! smaller one appear. Reads are scripts too, so the log's bounds come from the same instant as the page.
//!
//! Redis may keep nothing on disk: a Redis that restarted empty must not hand out ids again that clients already
//! hold. The first script to find the log's metadata missing starts a new *epoch* whose first id is above every
//! id that can have been handed out before: the larger of Redis' clock in microseconds, the newest id this hub has
//! seen, and the stream's last entry. Clients holding an old id then stand below the new epoch's history, which
//! every reader reports as lost events (`reset`), never as silence or as reused ids. The clock bound holds while
//! the log averaged under a million events a second over its life; the seen-id bound holds for whatever this
//! hub saw. See `docs/REDIS.md`.
//!
//! Live delivery: each hub's storage actor blocks in `XREAD` on a connection of its own, from its cursor, so an
//! append wakes it at once, and what that read returned is what it delivers (one read and one decode per event).
//! A dropped connection or a restarted Redis only delays it: the actor then reads the log from its cursor again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use protocol::{ENVELOPE_VERSION, Envelope, EventId, NewEvent, Scope, Topic};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use serde::Serialize;
use serde_json::Map;

use crate::event::{LogBounds, LogQuery, Page, StoredEvent};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicyState, TopicPolicies};
use crate::{Error, Result, Retention};

/// How long the storage actor's blocking read waits before returning for nothing (below its safety interval).
const FEED_BLOCK: Duration = Duration::from_millis(800);
/// Most entries one read takes from Redis; a filtered read returns fewer events and says how far it looked.
const SCAN_PER_READ: usize = 1000;
/// Calls that take longer fail, and the caller retries or reports the log unavailable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The oldest Redis with exclusive ranges in `XRANGE` and `XTRIM MINID`.
const MIN_VERSION: (u32, u32) = (6, 2);

/// Creates the epoch when the log's metadata is missing (a new or restarted-empty Redis) and returns the head.
/// `floor` is the newest id the calling hub has seen. Lua numbers are doubles: ids stay below 2^53, exact.
const EPOCH_LUA: &str = r#"
local function ensure_epoch(meta, stream, floor)
  local head = redis.call('HGET', meta, 'head')
  if head then return tonumber(head) end
  local now = redis.call('TIME')
  local start = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if floor + 1 > start then start = floor + 1 end
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if last[1] then
    local id = tonumber(string.match(last[1][1], '^(%d+)'))
    if id + 1 > start then start = id + 1 end
  end
  redis.call('HSET', meta, 'head', string.format('%.0f', start - 1), 'epoch', string.format('%.0f', start),
             'format', '2')
  return start - 1
end
-- RFC 3339 UTC with milliseconds, as the envelope's `ts` (days to a civil date: H. Hinnant's algorithm).
local function iso(ms)
  local sec = math.floor(ms / 1000)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(rem / 3600),
                       math.floor(rem % 3600 / 60), rem % 60, ms % 1000)
end
local function earliest_of(stream, head)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if first[1] then return tonumber(string.match(first[1][1], '^(%d+)')) end
  return head + 1
end
"#;

/// KEYS: meta, stream, idempotency hash, idempotency ids. ARGV: floor, length cap (0: none), format, then for each
/// event its idempotency key (or '') and, in format 1, its JSON; in format 2, the envelope's JSON before `ts` and
/// after it (each without its braces) and its trace context (or ''). Returns the ids in order.
///
/// Format 2 stores each event's envelope as the JSON every reader delivers, `ts` and `id` included (`j`), with its
/// trace context beside it (`p`); format 1 (the first release's) stores the published event (`e`), which readers
/// re-serialize. A log is in format 2 once its metadata says so: a new epoch is, and `hub migrate` moves an existing
/// log there once no hub of the first release reads it.
const APPEND_LUA: &str = r#"
local meta, stream, idem, idem_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local head = ensure_epoch(meta, stream, tonumber(ARGV[1]))
local now = redis.call('TIME')
local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ms = string.format('%.0f', millis)
local format = ARGV[3]
if format ~= (redis.call('HGET', meta, 'format') or '1') then
  return redis.error_reply('FORMAT the log is in another format')
end
local ts = iso(millis)
local stride = format == '2' and 4 or 2
local ids = {}
for i = 4, #ARGV, stride do
  local key = ARGV[i]
  local known = false
  if key ~= '' then known = redis.call('HGET', idem, key) end
  if known then
    ids[#ids + 1] = tonumber(known)
  else
    head = head + 1
    local id = string.format('%.0f', head)
    if format == '2' then
      local json = '{"id":' .. id .. ',' .. ARGV[i + 1] .. ',"ts":"' .. ts .. '",' .. ARGV[i + 2] .. '}'
      if ARGV[i + 3] ~= '' then
        redis.call('XADD', stream, id .. '-0', 't', ms, 'j', json, 'p', ARGV[i + 3])
      else
        redis.call('XADD', stream, id .. '-0', 't', ms, 'j', json)
      end
    else
      redis.call('XADD', stream, id .. '-0', 't', ms, 'e', ARGV[i + 1])
    end
    if key ~= '' then
      redis.call('HSET', idem, key, id)
      redis.call('ZADD', idem_ids, id, key)
    end
    ids[#ids + 1] = head
  end
end
redis.call('HSET', meta, 'head', string.format('%.0f', head))
if ARGV[2] ~= '0' then redis.call('XTRIM', stream, 'MAXLEN', '~', ARGV[2]) end
return ids
"#;

/// KEYS: meta, stream. ARGV: floor, after, count (0: bounds only). Returns {head, earliest, entries, format}.
const READ_LUA: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local head = ensure_epoch(meta, stream, tonumber(ARGV[1]))
local earliest = earliest_of(stream, head)
local entries = {}
if ARGV[3] ~= '0' then
  entries = redis.call('XRANGE', stream, '(' .. ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
end
return {head, earliest, entries, tonumber(redis.call('HGET', meta, 'format') or '1')}
"#;

/// KEYS: meta, stream, idempotency hash, idempotency ids. ARGV: cutoff in milliseconds. Removes the entries
/// older than the cutoff (a binary search over the dense ids, then one `XTRIM MINID`) and the idempotency keys of
/// every removed id (also those a length cap removed). Returns how many entries went.
const PRUNE_LUA: &str = r#"
local meta, stream, idem, idem_ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local cutoff = tonumber(ARGV[1])
local function entry_at(id)
  local e = redis.call('XRANGE', stream, string.format('%.0f', id) .. '-0', '+', 'COUNT', 1)[1]
  if not e then return nil, nil end
  local t = 0
  for i = 1, #e[2], 2 do if e[2][i] == 't' then t = tonumber(e[2][i + 1]) end end
  return tonumber(string.match(e[1], '^(%d+)')), t
end
local removed = 0
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
if first then
  local lo = tonumber(string.match(first[1], '^(%d+)'))
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1]
  local hi = tonumber(string.match(last[1], '^(%d+)')) + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local id, t = entry_at(mid)
    if id == nil then hi = mid
    elseif t < cutoff then lo = id + 1
    else hi = mid end
  end
  removed = redis.call('XTRIM', stream, 'MINID', string.format('%.0f', lo) .. '-0')
end
local earliest = earliest_of(stream, tonumber(redis.call('HGET', meta, 'head') or '0'))
while true do
  local keys = redis.call('ZRANGEBYSCORE', idem_ids, '-inf', '(' .. string.format('%.0f', earliest), 'LIMIT', 0, 500)
  if #keys == 0 then break end
  redis.call('HDEL', idem, unpack(keys))
  redis.call('ZREM', idem_ids, unpack(keys))
end
return removed
"#;

/// How the Redis log connects and behaves.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: String,
    /// Prefix of the log's keys; hubs with the same Redis and prefix share one log. The keys carry it as a hash
    /// tag (`{prefix}:log`), so on a Redis Cluster they live in one slot, as the scripts need.
    pub prefix: String,
    /// `max_age` is the replay window; `max_events` caps the stream's length (approximately, by whole nodes; 0:
    /// no cap).
    pub retention: Retention,
}

/// The names of the log's keys.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    meta: String,
    stream: String,
    idempotency: String,
    idempotency_ids: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            meta: format!("{{{prefix}}}:meta"),
            stream: format!("{{{prefix}}}:log"),
            idempotency: format!("{{{prefix}}}:idem"),
            idempotency_ids: format!("{{{prefix}}}:idem_ids"),
        }
    }
}

pub struct RedisLog {
    client: Client,
    /// Shared by appends and reads; reconnects by itself.
    connection: ConnectionManager,
    keys: Keys,
    retention: Retention,
    /// The default policy alone: a Redis stream is trimmed from its head only, so one retention holds for it all.
    policies: TopicPolicies,
    append: Script,
    read: Script,
    prune: Script,
    /// The newest id this process has seen: a floor for the next epoch's first id.
    seen: Arc<AtomicU64>,
    /// The format the log stores new events in (1 or 2, see `APPEND_LUA`), as the last read said.
    format: AtomicU8,
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(Box::new(e))
}

fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("redis log: {what}"))
}

impl RedisLog {
    /// Connects, checks that the server is a Redis that can hold the log, and loads the scripts.
    pub async fn connect(settings: RedisSettings) -> Result<Self> {
        let client = Client::open(settings.url.as_str()).map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let mut connection = ConnectionManager::new_with_config(client.clone(), config).await.map_err(unavailable)?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut connection).await.map_err(unavailable)?;
        check_version(&info)?;
        let log = Self {
            client,
            connection,
            keys: Keys::new(&settings.prefix),
            retention: settings.retention,
            policies: TopicPolicies::single(settings.retention),
            append: Script::new(&format!("{EPOCH_LUA}{APPEND_LUA}")),
            read: Script::new(&format!("{EPOCH_LUA}{READ_LUA}")),
            prune: Script::new(&format!("{EPOCH_LUA}{PRUNE_LUA}")),
            seen: Arc::new(AtomicU64::new(0)),
            format: AtomicU8::new(2),
        };
        // The first read creates the epoch if there is none, and fails here rather than later if the keys hold
        // something else.
        log.bounds(&LogQuery::all()).await?;
        Ok(log)
    }

    /// Moves a log of the first release's format to storing envelopes (`hub migrate`, once no hub of the first
    /// release reads it); returns whether it changed anything. A log that does not exist yet starts in the new format.
    pub async fn upgrade_format(&self) -> Result<bool> {
        let mut connection = self.connection.clone();
        let changed: i64 = redis::Script::new(
            "if redis.call('HGET', KEYS[1], 'format') == '2' then return 0 end \
             redis.call('HSET', KEYS[1], 'format', '2') return 1",
        )
        .key(&self.keys.meta)
        .invoke_async(&mut connection)
        .await
        .map_err(unavailable)?;
        self.format.store(2, Ordering::Relaxed);
        Ok(changed == 1)
    }

    fn saw(&self, id: u64) {
        self.seen.fetch_max(id, Ordering::Relaxed);
    }

    async fn read_raw(&self, after: u64, count: usize) -> Result<(LogBounds, Vec<Value>)> {
        let mut connection = self.connection.clone();
        let answer: Value = self
            .read
            .key(&self.keys.meta)
            .key(&self.keys.stream)
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(after)
            .arg(count)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let Value::Array(mut parts) = answer else { return Err(corrupt("a read answered no array")) };
        if parts.len() != 4 {
            return Err(corrupt("a read answered the wrong number of parts"));
        }
        let format = integer(&parts.pop().expect("four parts"))?;
        self.format.store(if format >= 2 { 2 } else { 1 }, Ordering::Relaxed);
        let entries = match parts.pop() {
            Some(Value::Array(entries)) => entries,
            _ => return Err(corrupt("a read answered no entries")),
        };
        let earliest = integer(&parts[1])?;
        let head = integer(&parts[0])?;
        self.saw(head);
        Ok((LogBounds { head, earliest }, entries))
    }
}

impl RedisLog {
    async fn append_as(&self, format: u8, events: &[NewEvent]) -> redis::RedisResult<Vec<u64>> {
        let mut invocation = self.append.prepare_invoke();
        invocation
            .key(&self.keys.meta)
            .key(&self.keys.stream)
            .key(&self.keys.idempotency)
            .key(&self.keys.idempotency_ids)
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(self.retention.max_events)
            .arg(format);
        for event in events {
            invocation.arg(event.idempotency_key.as_deref().unwrap_or(""));
            if format >= 2 {
                let (head, tail) = encode_envelope(event);
                invocation.arg(head).arg(tail).arg(event.traceparent.as_deref().unwrap_or(""));
            } else {
                invocation.arg(encode(event));
            }
        }
        let mut connection = self.connection.clone();
        invocation.invoke_async(&mut connection).await
    }
}

fn check_version(info: &str) -> Result<()> {
    let version = info
        .lines()
        .find_map(|line| line.strip_prefix("redis_version:"))
        .ok_or_else(|| Error::Config("the server at REDIS_URL did not say its Redis version".into()))?
        .trim();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(Error::Config(format!(
            "Redis {version} is too old for the event log: {}.{} or newer is needed",
            MIN_VERSION.0, MIN_VERSION.1
        )));
    }
    Ok(())
}

fn integer(value: &Value) -> Result<u64> {
    match value {
        Value::Int(n) if *n >= 0 => Ok(*n as u64),
        other => Err(corrupt(format!("expected an id, got {other:?}"))),
    }
}

/// `"<id>-0"` → id.
fn entry_id(value: &Value) -> Result<u64> {
    let text = match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| corrupt("an entry id is not text"))?,
        Value::SimpleString(text) => text.as_str(),
        other => return Err(corrupt(format!("expected an entry id, got {other:?}"))),
    };
    text.split_once('-')
        .and_then(|(id, _)| id.parse().ok())
        .ok_or_else(|| corrupt(format!("entry id {text:?} is not <id>-0")))
}

/// A stream entry `[id, [field, value, …]]` → the stored event: the envelope's JSON as stored (format 2), or the
/// published event, serialized here (format 1).
fn decode(entry: &Value) -> Result<StoredEvent> {
    let Value::Array(parts) = entry else { return Err(corrupt("an entry is not an array")) };
    let [id, Value::Array(fields)] = parts.as_slice() else { return Err(corrupt("an entry has no fields")) };
    let id = entry_id(id)?;
    let (mut millis, mut event, mut envelope, mut traceparent) = (None, None, None, None);
    for pair in fields.chunks(2) {
        let [Value::BulkString(name), Value::BulkString(value)] = pair else { continue };
        match name.as_slice() {
            b"t" => millis = std::str::from_utf8(value).ok().and_then(|t| t.parse::<i64>().ok()),
            b"j" => envelope = Some(value.as_slice()),
            b"p" => traceparent = std::str::from_utf8(value).ok(),
            b"e" => event = Some(value.as_slice()),
            _ => {}
        }
    }
    let created_at = millis
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .ok_or_else(|| corrupt(format!("event {id} has no time")))?;
    if let Some(json) = envelope {
        let json = std::str::from_utf8(json).map_err(|_| corrupt(format!("event {id} is not text")))?;
        let parsed: Envelope = serde_json::from_str(json).map_err(|e| corrupt(format!("event {id}: {e}")))?;
        if parsed.id.get() != id {
            return Err(corrupt(format!("entry {id} holds event {}", parsed.id)));
        }
        return Ok(StoredEvent::with_json(parsed, created_at, traceparent.map(str::to_owned), json.into()));
    }
    let event: NewEvent = serde_json::from_slice(event.ok_or_else(|| corrupt(format!("event {id} has no body")))?)
        .map_err(|e| corrupt(format!("event {id}: {e}")))?;
    let id = EventId::new(id).map_err(|e| corrupt(format!("event {id}: {e}")))?;
    Ok(StoredEvent::from_new(id, created_at, event))
}

/// What a format 1 stream entry holds of an event: everything but the id, the time and the idempotency key.
fn encode(event: &NewEvent) -> String {
    let stored = NewEvent { key: event.effective_key(), idempotency_key: None, ..event.clone() };
    // A new event is strings, integers and JSON values: serializing cannot fail.
    serde_json::to_string(&stored).expect("an event always serializes")
}

/// The envelope's fields before `ts`, in `Envelope`'s order.
#[derive(Serialize)]
struct EnvelopeHead<'a> {
    topic: &'a Topic,
    scope: &'a Scope,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

/// The envelope's fields after `ts`, in `Envelope`'s order.
#[derive(Serialize)]
struct EnvelopeTail<'a> {
    v: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
    payload: &'a Map<String, serde_json::Value>,
}

/// What a format 2 append sends of an event: the envelope's JSON before and after `ts`, without the braces (the
/// script puts `id` and `ts` between them), so the stored text is exactly what `Envelope` serializes to.
fn encode_envelope(event: &NewEvent) -> (String, String) {
    let head = EnvelopeHead { topic: &event.topic, scope: &event.scope, key: event.effective_key(), seq: event.seq };
    let tail =
        EnvelopeTail { v: ENVELOPE_VERSION, correlation_id: event.correlation_id.as_deref(), payload: &event.payload };
    // Plain data: serializing cannot fail, and an object always has its braces.
    let inner = |json: String| json[1..json.len() - 1].to_owned();
    (
        inner(serde_json::to_string(&head).expect("an envelope serializes")),
        inner(serde_json::to_string(&tail).expect("an envelope serializes")),
    )
}

#[async_trait]
impl EventLog for RedisLog {
    fn provider(&self) -> &'static str {
        "redis"
    }

    async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<EventId>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = self.append_as(self.format.load(Ordering::Relaxed), &events).await;
        if let Err(e) = &ids
            && e.code() == Some("FORMAT")
        {
            // `hub migrate` moved the log on (or a new epoch began) since this hub last read it.
            self.bounds(&LogQuery::all()).await?;
            ids = self.append_as(self.format.load(Ordering::Relaxed), &events).await;
        }
        let ids = ids.map_err(unavailable)?;
        if ids.len() != events.len() {
            return Err(corrupt(format!("{} ids for {} events", ids.len(), events.len())));
        }
        if let Some(newest) = ids.iter().max() {
            self.saw(*newest);
        }
        ids.into_iter().map(|id| EventId::new(id).map_err(corrupt)).collect()
    }

    async fn read_after(&self, after: u64, query: &LogQuery, limit: usize) -> Result<Page> {
        let (bounds, entries) = self.read_raw(after, SCAN_PER_READ.max(limit)).await?;
        let mut page = Page { events: Vec::new(), through: after, complete: false, bounds };
        for entry in &entries {
            if page.events.len() == limit {
                return Ok(page);
            }
            let event = decode(entry)?;
            page.through = event.id();
            if query.matches(&event) {
                page.events.push(Arc::new(event));
            }
        }
        if entries.len() < SCAN_PER_READ.max(limit) {
            // Everything up to the head was looked at (the head the read saw, in the same script).
            page.through = page.through.max(bounds.head);
        }
        page.complete = page.through >= bounds.head;
        Ok(page)
    }

    async fn bounds(&self, _query: &LogQuery) -> Result<LogBounds> {
        Ok(self.read_raw(0, 0).await?.0)
    }

    fn policies(&self) -> &TopicPolicies {
        &self.policies
    }

    async fn policy_states(&self) -> Result<Vec<PolicyState>> {
        let bounds = self.bounds(&LogQuery::all()).await?;
        Ok(vec![PolicyState::of_one_position("default", bounds)])
    }

    async fn prune(&self) -> Result<Vec<u64>> {
        let cutoff = Utc::now() - self.retention.max_age;
        let mut connection = self.connection.clone();
        let removed: u64 = self
            .prune
            .key(&self.keys.meta)
            .key(&self.keys.stream)
            .key(&self.keys.idempotency)
            .key(&self.keys.idempotency_ids)
            .arg(cutoff.timestamp_millis())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(vec![removed])
    }

    async fn live_feed(&self) -> Result<Box<dyn LiveFeed>> {
        // A connection of its own: a blocking read holds the connection it runs on.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(FEED_BLOCK + RESPONSE_TIMEOUT));
        let connection =
            self.client.get_multiplexed_async_connection_with_config(&config).await.map_err(unavailable)?;
        // Named so operators (and tests) can tell the readers of each log apart in `CLIENT LIST`.
        redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(format!("realtime-hub-reader:{}", self.keys.prefix))
            .exec_async(&mut connection.clone())
            .await
            .map_err(unavailable)?;
        Ok(Box::new(RedisFeed { connection, stream: self.keys.stream.clone(), seen: self.seen.clone(), read: None }))
    }
}

/// The storage actor's feed: a blocking `XREAD` from its cursor, whose answer it then serves as the next page, so a
/// wake-up costs one read of the new entries and each is decoded once.
struct RedisFeed {
    connection: MultiplexedConnection,
    stream: String,
    /// The log's newest id this process has seen (shared with the log, for the epoch floor).
    seen: Arc<AtomicU64>,
    /// What the last `XREAD` returned: the cursor it read after, and the entries (at most `FEED_COUNT`).
    read: Option<(u64, Vec<Value>)>,
}

/// Most entries one blocking read takes; a full read is continued by reading the log.
const FEED_COUNT: usize = 1000;

#[async_trait]
impl LiveFeed for RedisFeed {
    async fn changed(&mut self, cursor: u64) -> Result<()> {
        // Answers at once when entries after the cursor exist, else when one is appended or the block ends.
        let answer: Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(FEED_COUNT)
            .arg("BLOCK")
            .arg(FEED_BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(format!("{cursor}-0"))
            .query_async(&mut self.connection)
            .await
            .map_err(unavailable)?;
        self.read = xread_entries(answer).map(|entries| (cursor, entries));
        Ok(())
    }

    /// The entries the last wake-up read, when they follow `after` without a gap; otherwise (nothing read, a read
    /// from another cursor, a gap that retention or a new epoch made) the log is read, which says what was lost.
    async fn read(&mut self, after: u64, limit: usize) -> Result<Option<Page>> {
        let Some((cursor, entries)) = self.read.take() else { return Ok(None) };
        if cursor != after || entries.is_empty() || entries.len() > limit {
            return Ok(None);
        }
        let events = entries.iter().map(|entry| decode(entry).map(Arc::new)).collect::<Result<Vec<_>>>()?;
        let (first, last) = (events[0].id(), events[events.len() - 1].id());
        if first != after + 1 {
            return Ok(None);
        }
        self.seen.fetch_max(last, Ordering::Relaxed);
        // Fewer than asked for: the stream ended there when it was read. A full read may have more behind it.
        let complete = entries.len() < FEED_COUNT;
        Ok(Some(Page { events, through: last, complete, bounds: LogBounds { head: last, earliest: first } }))
    }
}

/// The entries of an `XREAD` answer on one stream: `[[stream, [entry, …]]]`, or nil when the block ended.
fn xread_entries(answer: Value) -> Option<Vec<Value>> {
    let Value::Array(mut streams) = answer else { return None };
    let Value::Array(mut stream) = streams.pop()? else { return None };
    match stream.pop()? {
        Value::Array(entries) => Some(entries),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_versions_with_exclusive_ranges_are_accepted() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:6.2.0\r\n").is_ok());
        assert!(matches!(check_version("redis_version:6.0.9\r\n"), Err(Error::Config(_))));
        assert!(matches!(check_version("nothing"), Err(Error::Config(_))));
    }

    /// The script joins the two halves around `id` and `ts`; the result must be the envelope's own serialization.
    #[test]
    fn a_stored_envelope_is_exactly_what_the_envelope_serializes_to() {
        let mut full = NewEvent::new(
            Topic::parse("run.logs").unwrap(),
            Scope::try_from([("run_id", "r1")]).unwrap(),
            serde_json::json!({"line": "a \"quoted\" ✓"}).as_object().cloned().unwrap(),
        );
        full.key = Some("run:r1".into());
        full.seq = Some(7);
        full.correlation_id = Some("c-1".into());
        let bare = NewEvent::new(Topic::parse("a").unwrap(), Scope::default(), Map::new());
        for event in [full, bare] {
            let (head, tail) = encode_envelope(&event);
            let ts = "2026-11-24T21:00:00.123Z";
            let stored = format!("{{\"id\":42,{head},\"ts\":\"{ts}\",{tail}}}");
            let at = DateTime::parse_from_rfc3339(ts).unwrap().with_timezone(&Utc);
            let expected = StoredEvent::from_new(EventId::new(42).unwrap(), at, event);
            assert_eq!(stored, expected.json());
        }
    }

    #[test]
    fn entry_ids_are_the_hubs_integers() {
        assert_eq!(entry_id(&Value::BulkString(b"1795000000000042-0".to_vec())).unwrap(), 1_795_000_000_000_042);
        assert!(entry_id(&Value::BulkString(b"nope".to_vec())).is_err());
    }
}
