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
use protocol::{ENVELOPE_VERSION, EventId, NewEvent, RawEnvelope, Scope, Topic};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use serde::Serialize;
use serde_json::Map;

use crate::event::{LogBounds, LogQuery, Page, StoredEvent, decode_new, encode_new};
use crate::event_log::{EventLog, LiveFeed};
use crate::policy::{PolicyState, TopicPolicies, TopicPolicy};
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
local function id_of(entry_id) return tonumber(string.match(entry_id, '^(%d+)')) end
-- The default stream, then every stream a topic policy ever used (the set of them).
local function all_streams(default, set)
  local out, seen = {default}, {[default] = true}
  for _, s in ipairs(redis.call('SMEMBERS', set)) do
    if not seen[s] then seen[s] = true; out[#out + 1] = s end
  end
  return out
end
local function ensure_epoch(meta, streams, floor)
  local head = redis.call('HGET', meta, 'head')
  if head then return tonumber(head) end
  local now = redis.call('TIME')
  local start = tonumber(now[1]) * 1000000 + tonumber(now[2])
  if floor + 1 > start then start = floor + 1 end
  for _, stream in ipairs(streams) do
    local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    if last[1] then
      local id = id_of(last[1][1])
      if id + 1 > start then start = id + 1 end
    end
  end
  redis.call('HSET', meta, 'head', string.format('%.0f', start - 1), 'epoch', string.format('%.0f', start),
             'format', '2')
  return start - 1
end
-- Where a stream's removal stands: the newest id retention or a cap removed from it, and never below the epoch.
local function removed_of(meta, stream)
  local epoch = tonumber(redis.call('HGET', meta, 'epoch') or '1')
  local removed = tonumber(redis.call('HGET', meta, 'removed:' .. stream) or '0')
  if epoch - 1 > removed then return epoch - 1 end
  return removed
end
local function removed_to(meta, stream, id, count)
  if id > tonumber(redis.call('HGET', meta, 'removed:' .. stream) or '0') then
    redis.call('HSET', meta, 'removed:' .. stream, string.format('%.0f', id))
  end
  redis.call('HINCRBY', meta, 'removedn:' .. stream, count)
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
"#;

/// KEYS: meta, default stream, idempotency hash, idempotency ids, topic policies, streams set. ARGV: floor, the
/// default stream's length cap when no policies are stored (0: none), format, then for each event its idempotency
/// key (or ''), its topic, and in format 1 its JSON; in format 2, the envelope's JSON before `ts` and after it
/// (each without its braces) and its trace context (or ''). Returns the ids in order.
///
/// Each event goes to the stream of the first stored topic policy whose patterns match its topic (the hubs store
/// them, see `REGISTER_LUA`), so every writer, the publisher crate's sink included, follows the same policies. A
/// policy's cap trims its own stream only, and moves its removal position to below its oldest retained event.
///
/// Format 2 stores each event's envelope as the JSON every reader delivers, `ts` and `id` included (`j`), with its
/// trace context beside it (`p`); format 1 (the first release's) stores the published event (`e`), which readers
/// re-serialize. A log is in format 2 once its metadata says so: a new epoch is, and `hub migrate` moves an existing
/// log there once no hub of the first release reads it.
const APPEND_LUA: &str = r#"
local meta, default, idem, idem_ids, table_key, set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local head = ensure_epoch(meta, all_streams(default, set), tonumber(ARGV[1]))
local now = redis.call('TIME')
local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ms = string.format('%.0f', millis)
local format = ARGV[3]
if format ~= (redis.call('HGET', meta, 'format') or '1') then
  return redis.error_reply('FORMAT the log is in another format')
end
-- The stored policies: "stream TAB cap TAB pattern,pattern" lines, the default policy (pattern *) last.
local policies = {}
local text = redis.call('GET', table_key)
if text then
  for line in string.gmatch(text, '[^\n]+') do
    local stream, cap, patterns = string.match(line, '^([^\t]*)\t([^\t]*)\t(.*)$')
    local list = {}
    for p in string.gmatch(patterns, '[^,]+') do list[#list + 1] = p end
    policies[#policies + 1] = {stream = stream, cap = tonumber(cap), patterns = list}
  end
end
if #policies == 0 then policies[1] = {stream = default, cap = tonumber(ARGV[2]), patterns = {'*'}} end
local function route(topic)
  for _, policy in ipairs(policies) do
    for _, p in ipairs(policy.patterns) do
      if string.sub(p, -1) == '*' then
        if string.sub(topic, 1, #p - 1) == string.sub(p, 1, -2) then return policy end
      elseif p == topic then return policy end
    end
  end
  return policies[#policies]
end
local ts = iso(millis)
local stride = format == '2' and 5 or 3
local ids, touched = {}, {}
for i = 4, #ARGV, stride do
  local key = ARGV[i]
  local known = false
  if key ~= '' then known = redis.call('HGET', idem, key) end
  if known then
    ids[#ids + 1] = tonumber(known)
  else
    head = head + 1
    local id = string.format('%.0f', head)
    local policy = route(ARGV[i + 1])
    touched[policy.stream] = policy
    if format == '2' then
      local json = '{"id":' .. id .. ',' .. ARGV[i + 2] .. ',"ts":"' .. ts .. '",' .. ARGV[i + 3] .. '}'
      if ARGV[i + 4] ~= '' then
        redis.call('XADD', policy.stream, id .. '-0', 't', ms, 'j', json, 'p', ARGV[i + 4])
      else
        redis.call('XADD', policy.stream, id .. '-0', 't', ms, 'j', json)
      end
    else
      redis.call('XADD', policy.stream, id .. '-0', 't', ms, 'e', ARGV[i + 2])
    end
    if key ~= '' then
      redis.call('HSET', idem, key, id)
      redis.call('ZADD', idem_ids, id, key)
    end
    ids[#ids + 1] = head
  end
end
redis.call('HSET', meta, 'head', string.format('%.0f', head))
for stream, policy in pairs(touched) do
  if policy.cap > 0 then
    local trimmed = redis.call('XTRIM', stream, 'MAXLEN', '~', policy.cap)
    if trimmed > 0 then
      local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
      removed_to(meta, stream, first and id_of(first[1]) - 1 or head, trimmed)
    end
  end
end
return ids
"#;

/// KEYS: meta, default stream, streams set. ARGV: floor, after, count (0: bounds only), then the streams to read.
/// Returns {head, removed, entries, format, through}: `removed` the highest removal position of those streams,
/// `entries` the first `count` of theirs after `after`, merged in id order, and `through` the id up to which every
/// entry of theirs is in `entries` (a stream that gave `count` entries may hold more past its last).
const READ_LUA: &str = r#"
local meta, default, set = KEYS[1], KEYS[2], KEYS[3]
local head = ensure_epoch(meta, all_streams(default, set), tonumber(ARGV[1]))
local streams = {}
for i = 4, #ARGV do streams[#streams + 1] = ARGV[i] end
local removed = tonumber(redis.call('HGET', meta, 'epoch') or '1') - 1
for _, stream in ipairs(streams) do
  local r = removed_of(meta, stream)
  if r > removed then removed = r end
end
local count = tonumber(ARGV[3])
local entries, through = {}, head
if count > 0 then
  local limit = nil
  for _, stream in ipairs(streams) do
    local got = redis.call('XRANGE', stream, '(' .. ARGV[2] .. '-0', '+', 'COUNT', count)
    for _, e in ipairs(got) do entries[#entries + 1] = e end
    if #got == count then
      local last = id_of(got[#got][1])
      if limit == nil or last < limit then limit = last end
    end
  end
  if #streams > 1 then table.sort(entries, function(a, b) return id_of(a[1]) < id_of(b[1]) end) end
  local kept = {}
  for _, e in ipairs(entries) do
    if #kept == count then break end
    if limit ~= nil and id_of(e[1]) > limit then break end
    kept[#kept + 1] = e
  end
  entries = kept
  if #entries == count then through = id_of(entries[#entries][1])
  elseif limit ~= nil then through = limit end
end
return {head, removed, entries, tonumber(redis.call('HGET', meta, 'format') or '1'), through}
"#;

/// KEYS: meta, default stream, idempotency hash, idempotency ids, streams set. ARGV: pairs of a stream and its
/// cutoff in milliseconds. Removes each stream's entries older than its cutoff (a binary search over its ids, then
/// one `XTRIM MINID`), moves its removal position to the newest entry removed, in the same script, and drops the
/// idempotency keys of ids below every stream's oldest entry. Returns how many entries went, by stream.
const PRUNE_LUA: &str = r#"
local meta, default, idem, idem_ids, set = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local function entry_at(stream, id)
  local e = redis.call('XRANGE', stream, string.format('%.0f', id) .. '-0', '+', 'COUNT', 1)[1]
  if not e then return nil, nil end
  local t = 0
  for i = 1, #e[2], 2 do if e[2][i] == 't' then t = tonumber(e[2][i + 1]) end end
  return id_of(e[1]), t
end
local counts = {}
for i = 1, #ARGV, 2 do
  local stream, cutoff = ARGV[i], tonumber(ARGV[i + 1])
  local removed = 0
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if first then
    local lo = id_of(first[1])
    local hi = id_of(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)[1][1]) + 1
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local id, t = entry_at(stream, mid)
      if id == nil then hi = mid
      elseif t < cutoff then lo = id + 1
      else hi = mid end
    end
    local gone = redis.call('XREVRANGE', stream, '(' .. string.format('%.0f', lo) .. '-0', '-', 'COUNT', 1)[1]
    if gone then
      removed = redis.call('XTRIM', stream, 'MINID', string.format('%.0f', lo) .. '-0')
      removed_to(meta, stream, id_of(gone[1]), removed)
    end
  end
  counts[#counts + 1] = removed
end
local oldest = tonumber(redis.call('HGET', meta, 'head') or '0') + 1
for _, stream in ipairs(all_streams(default, set)) do
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  if first and id_of(first[1]) < oldest then oldest = id_of(first[1]) end
end
while true do
  local keys = redis.call('ZRANGEBYSCORE', idem_ids, '-inf', '(' .. string.format('%.0f', oldest), 'LIMIT', 0, 500)
  if #keys == 0 then break end
  redis.call('HDEL', idem, unpack(keys))
  redis.call('ZREM', idem_ids, unpack(keys))
end
return counts
"#;

/// KEYS: meta, default stream, streams set, topic policies. ARGV: the policies' text (`APPEND_LUA`), then every
/// stream of theirs. Stores the policies for every writer, adds their streams to the set, and gives a stream new to
/// the log a removal position: the default stream of a log older than policies starts below its oldest entry (as
/// its `earliest` said before); a new policy's stream at the highest position any stream reached, since its topics
/// may have been removed under another policy (a reader may be reset once more than needed, never told less).
const REGISTER_LUA: &str = r#"
local meta, default, set, table_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local head = ensure_epoch(meta, all_streams(default, set), 0)
if redis.call('HEXISTS', meta, 'removed:' .. default) == 0 then
  local first = redis.call('XRANGE', default, '-', '+', 'COUNT', 1)[1]
  local below = head
  if first then below = id_of(first[1]) - 1 end
  redis.call('HSET', meta, 'removed:' .. default, string.format('%.0f', math.max(below, removed_of(meta, default))))
end
local base = 0
for _, stream in ipairs(all_streams(default, set)) do
  local r = removed_of(meta, stream)
  if r > base then base = r end
end
for i = 2, #ARGV do
  redis.call('SADD', set, ARGV[i])
  if redis.call('HEXISTS', meta, 'removed:' .. ARGV[i]) == 0 then
    redis.call('HSET', meta, 'removed:' .. ARGV[i], string.format('%.0f', base))
  end
end
redis.call('SET', table_key, ARGV[1])
return head
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
    /// The topic policies this process keeps the log by and stores for every writer (the hubs); `None` follows
    /// the policies the hubs stored (the publisher crate's sink).
    pub policies: Option<TopicPolicies>,
}

/// The names of the log's keys.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
    meta: String,
    stream: String,
    idempotency: String,
    idempotency_ids: String,
    /// The stored topic policies, and the set of every stream a policy ever used.
    policies: String,
    streams: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            meta: format!("{{{prefix}}}:meta"),
            stream: format!("{{{prefix}}}:log"),
            idempotency: format!("{{{prefix}}}:idem"),
            idempotency_ids: format!("{{{prefix}}}:idem_ids"),
            policies: format!("{{{prefix}}}:policies"),
            streams: format!("{{{prefix}}}:streams"),
        }
    }

    /// The stream of a policy: the default policy's is the log's first stream; a listed one's is named by a hash
    /// of its key (a change that could move a topic between policies starts a new stream).
    fn stream_of(&self, policy: &TopicPolicy) -> String {
        if policy.is_default() {
            return self.stream.clone();
        }
        format!("{}:{}", self.stream, policy.key_hash())
    }
}

pub struct RedisLog {
    client: Client,
    /// Shared by appends and reads; reconnects by itself.
    connection: ConnectionManager,
    keys: Keys,
    /// Each topic policy has a stream of its own (a stream is trimmed from its head only), under the one id order.
    policies: TopicPolicies,
    /// By policy index.
    streams: Vec<String>,
    /// Streams of policies this process does not have (another configuration's, or an older one's): read with
    /// every query, removed by the default policy's age. Refreshed at each removal.
    retired: std::sync::Mutex<Vec<String>>,
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
        let keys = Keys::new(&settings.prefix);
        let registers = settings.policies.is_some();
        let policies = settings.policies.unwrap_or_else(|| TopicPolicies::single(settings.retention));
        let streams = policies.iter().map(|p| keys.stream_of(p)).collect();
        let log = Self {
            client,
            connection,
            keys,
            policies,
            streams,
            retired: std::sync::Mutex::default(),
            append: Script::new(&format!("{EPOCH_LUA}{APPEND_LUA}")),
            read: Script::new(&format!("{EPOCH_LUA}{READ_LUA}")),
            prune: Script::new(&format!("{EPOCH_LUA}{PRUNE_LUA}")),
            seen: Arc::new(AtomicU64::new(0)),
            format: AtomicU8::new(2),
        };
        if registers {
            log.register().await?;
        }
        log.refresh_retired().await?;
        // The first read creates the epoch if there is none, and fails here rather than later if the keys hold
        // something else.
        log.bounds(&LogQuery::all()).await?;
        Ok(log)
    }

    /// Stores this process's policies for every writer (`REGISTER_LUA`).
    async fn register(&self) -> Result<()> {
        let table: Vec<String> = self
            .policies
            .iter()
            .zip(&self.streams)
            .map(|(policy, stream)| {
                let patterns: Vec<String> = policy.topics.iter().map(ToString::to_string).collect();
                let patterns = if policy.is_default() { "*".to_owned() } else { patterns.join(",") };
                format!("{stream}\t{}\t{patterns}", policy.max_events)
            })
            .collect();
        let script = Script::new(&format!("{EPOCH_LUA}{REGISTER_LUA}"));
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.keys.meta).key(&self.keys.stream).key(&self.keys.streams).key(&self.keys.policies);
        invocation.arg(table.join("\n"));
        for stream in &self.streams {
            invocation.arg(stream);
        }
        let _: u64 = invocation.invoke_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    /// Reads which streams the log has beyond this process's policies.
    async fn refresh_retired(&self) -> Result<()> {
        let all: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&self.keys.streams)
            .query_async(&mut self.connection.clone())
            .await
            .map_err(unavailable)?;
        let retired = all.into_iter().filter(|s| !self.streams.contains(s)).collect();
        *self.retired.lock().unwrap_or_else(|e| e.into_inner()) = retired;
        Ok(())
    }

    /// The streams a read of `query` looks at: those of the policies it reaches, and every retired one.
    fn streams_for(&self, query: &LogQuery) -> Vec<String> {
        let reached = self.policies.reached_by(&query.topics);
        let mut streams: Vec<String> = self.policies.members(reached).map(|i| self.streams[i].clone()).collect();
        streams.extend(self.retired.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        streams
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

    /// The log's bounds for `streams`, the first `count` of their entries after `after` in id order, and the id up
    /// to which every entry of theirs is among them.
    async fn read_raw(&self, after: u64, count: usize, streams: &[String]) -> Result<(LogBounds, Vec<Value>, u64)> {
        let mut connection = self.connection.clone();
        let mut invocation = self.read.prepare_invoke();
        invocation.key(&self.keys.meta).key(&self.keys.stream).key(&self.keys.streams);
        invocation.arg(self.seen.load(Ordering::Relaxed)).arg(after).arg(count);
        for stream in streams {
            invocation.arg(stream);
        }
        let answer: Value = invocation.invoke_async(&mut connection).await.map_err(unavailable)?;
        let Value::Array(mut parts) = answer else { return Err(corrupt("a read answered no array")) };
        if parts.len() != 5 {
            return Err(corrupt("a read answered the wrong number of parts"));
        }
        let through = integer(&parts.pop().expect("five parts"))?;
        let format = integer(&parts.pop().expect("four parts"))?;
        self.format.store(if format >= 2 { 2 } else { 1 }, Ordering::Relaxed);
        let entries = match parts.pop() {
            Some(Value::Array(entries)) => entries,
            _ => return Err(corrupt("a read answered no entries")),
        };
        let removed = integer(&parts[1])?;
        let head = integer(&parts[0])?;
        self.saw(head);
        Ok((LogBounds { head, earliest: removed + 1 }, entries, through))
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
            .key(&self.keys.policies)
            .key(&self.keys.streams)
            .arg(self.seen.load(Ordering::Relaxed))
            .arg(self.policies.get(self.policies.len() - 1).max_events)
            .arg(format);
        for event in events {
            invocation.arg(event.idempotency_key.as_deref().unwrap_or("")).arg(event.topic.as_str());
            if format >= 2 {
                let (head, tail) = encode_envelope(event);
                invocation.arg(head).arg(tail).arg(event.traceparent.as_deref().unwrap_or(""));
            } else {
                invocation.arg(encode_new(event));
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
        let parsed: RawEnvelope = serde_json::from_str(json).map_err(|e| corrupt(format!("event {id}: {e}")))?;
        if parsed.id.get() != id {
            return Err(corrupt(format!("entry {id} holds event {}", parsed.id)));
        }
        return Ok(StoredEvent::with_json(parsed, created_at, traceparent.map(str::to_owned), json.into()));
    }
    let event = event.ok_or_else(|| corrupt(format!("event {id} has no body")))?;
    let event_id = EventId::new(id).map_err(|e| corrupt(format!("event {id}: {e}")))?;
    decode_new(event_id, created_at, event).map_err(|e| corrupt(format!("event {id}: {e}")))
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
        let (bounds, entries, through) =
            self.read_raw(after, SCAN_PER_READ.max(limit), &self.streams_for(query)).await?;
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
        // Every entry of the streams up to `through` was looked at (the head the read saw, in the same script,
        // when none of them had more).
        page.through = page.through.max(through);
        page.complete = page.through >= bounds.head;
        Ok(page)
    }

    async fn bounds(&self, query: &LogQuery) -> Result<LogBounds> {
        Ok(self.read_raw(0, 0, &self.streams_for(query)).await?.0)
    }

    fn policies(&self) -> &TopicPolicies {
        &self.policies
    }

    async fn policy_states(&self) -> Result<Vec<PolicyState>> {
        let mut pipe = redis::pipe();
        pipe.hget(&self.keys.meta, "epoch");
        for stream in &self.streams {
            pipe.cmd("XRANGE").arg(stream).arg("-").arg("+").arg("COUNT").arg(1);
            pipe.hget(&self.keys.meta, format!("removed:{stream}"));
            pipe.hget(&self.keys.meta, format!("removedn:{stream}"));
        }
        let answers: Vec<Value> = pipe.query_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        let number = |value: &Value| -> Option<u64> {
            match value {
                Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
                Value::Int(n) => u64::try_from(*n).ok(),
                _ => None,
            }
        };
        let epoch = answers.first().and_then(number).unwrap_or(1);
        let mut states = Vec::with_capacity(self.streams.len());
        for (policy, answer) in self.policies.iter().zip(answers[1..].chunks(3)) {
            let oldest = match &answer[0] {
                Value::Array(entries) => entries.first().and_then(|e| match e {
                    Value::Array(parts) => parts.first().and_then(|id| entry_id(id).ok()),
                    _ => None,
                }),
                _ => None,
            };
            let removed_through = number(&answer[1]).unwrap_or(0).max(epoch - 1);
            states.push(PolicyState {
                name: policy.name.clone(),
                oldest,
                removed_through,
                removed: Some(number(&answer[2]).unwrap_or(0)),
            });
        }
        Ok(states)
    }

    async fn prune(&self) -> Result<Vec<u64>> {
        self.refresh_retired().await?;
        let now = Utc::now();
        let mut invocation = self.prune.prepare_invoke();
        invocation
            .key(&self.keys.meta)
            .key(&self.keys.stream)
            .key(&self.keys.idempotency)
            .key(&self.keys.idempotency_ids)
            .key(&self.keys.streams);
        for (policy, stream) in self.policies.iter().zip(&self.streams) {
            invocation.arg(stream).arg((now - policy.max_age).timestamp_millis());
        }
        // A retired stream keeps its events as long as the default policy keeps its own.
        let default_age = self.policies.get(self.policies.len() - 1).max_age;
        for stream in self.retired.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            invocation.arg(stream).arg((now - default_age).timestamp_millis());
        }
        let removed: Vec<u64> = invocation.invoke_async(&mut self.connection.clone()).await.map_err(unavailable)?;
        Ok(removed.into_iter().take(self.policies.len()).collect())
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
        let mut streams = self.streams.clone();
        streams.extend(self.retired.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned());
        Ok(Box::new(RedisFeed { connection, streams, seen: self.seen.clone(), read: None }))
    }
}

/// The storage actor's feed: a blocking `XREAD` from its cursor, whose answer it then serves as the next page, so a
/// wake-up costs one read of the new entries and each is decoded once. With several streams (topic policies) the
/// `XREAD` is a wake-up only, and the log's read script merges the streams in id order.
struct RedisFeed {
    connection: MultiplexedConnection,
    streams: Vec<String>,
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
        let mut xread = redis::cmd("XREAD");
        xread.arg("COUNT").arg(FEED_COUNT).arg("BLOCK").arg(FEED_BLOCK.as_millis() as u64).arg("STREAMS");
        xread.arg(&self.streams);
        for _ in &self.streams {
            xread.arg(format!("{cursor}-0"));
        }
        let answer: Value = xread.query_async(&mut self.connection).await.map_err(unavailable)?;
        self.read = if self.streams.len() == 1 { xread_entries(answer).map(|entries| (cursor, entries)) } else { None };
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
