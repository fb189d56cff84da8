//! Configuration: every field is an environment variable and a flag of the same name in kebab case.

use std::time::Duration;

use clap::ValueEnum;

pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// The redis backend's default replay window, as the older SSE broker had it.
pub const DEFAULT_REDIS_RETENTION: Duration = Duration::from_secs(600);
pub const DEFAULT_REDIS_PREFIX: &str = "realtime";
pub const DEFAULT_REDIS_MAX_EVENTS: usize = 1_000_000;
pub const DEFAULT_NATS_STREAM: &str = "realtime";
pub const DEFAULT_NATS_MAX_EVENTS: usize = 10_000_000;
pub const DEFAULT_RETENTION_INTERVAL: &str = "60s";
pub const DEFAULT_HEARTBEAT: &str = "25s";
pub const DEFAULT_SHUTDOWN_GRACE: &str = "10s";
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;
pub const DEFAULT_RECENT_EVENTS: usize = 10_000;
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = protocol::envelope::DEFAULT_MAX_PAYLOAD_BYTES;
pub const DEFAULT_MAX_PUBLISH_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_BATCH: usize = 1000;
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 100;
pub const DEFAULT_SUBSCRIBE_RATE: u32 = 20;
pub const DEFAULT_PROTOCOL_TOLERANCE: u32 = 10;
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_DB_POOL_SIZE: u32 = 10;
pub const DEFAULT_JWT_LEEWAY: &str = "30s";
pub const DEFAULT_REVOCATION_TTL: &str = "24h";
pub const DEFAULT_JWKS_MIN_INTERVAL: &str = "10s";
pub const DEFAULT_SSE_HEARTBEAT: &str = "15s";
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
pub const DEFAULT_MAX_CONNECTIONS_PER_SUBJECT: usize = 1000;
pub const DEFAULT_MAX_POLL_WAITERS: usize = 10_000;
pub const DEFAULT_PUBLISH_RATE: u32 = 5000;
pub const DEFAULT_INBOX_POLL: &str = "100ms";
pub const DEFAULT_DB_TIMEOUT: &str = "10s";

/// Which event log the hub uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// In this process's memory: one hub, no set-up, history lost on restart.
    Memory,
    /// PostgreSQL (`DATABASE_URL`): any number of hubs share the log.
    Postgres,
    /// Redis (`REDIS_URL`): any number of hubs share the log, a Redis Stream.
    Redis,
    /// NATS JetStream (`NATS_URL`): any number of hubs share the log, a stream replicated across the cluster.
    Nats,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(long = "hub-bind", env = "HUB_BIND", default_value = DEFAULT_BIND)]
    pub bind: String,

    /// Event-log backend [default: redis when REDIS_URL is set, nats when NATS_URL is, else memory]. REALTIME_BACKEND is accepted as an
    /// alias of HUB_BACKEND.
    #[arg(long = "hub-backend", env = "HUB_BACKEND", value_enum)]
    pub backend: Option<Backend>,

    /// PostgreSQL connection string, for the postgres backend.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Connections in the PostgreSQL pool (the listener uses one more).
    #[arg(long = "hub-db-pool-size", env = "HUB_DB_POOL_SIZE", default_value_t = DEFAULT_DB_POOL_SIZE)]
    pub db_pool_size: u32,

    /// The longest the hub waits for PostgreSQL to answer one statement; a connection that does not answer in time
    /// is taken for dead (a peer gone without closing it) and the pool is opened anew.
    #[arg(long = "hub-db-timeout", env = "HUB_DB_TIMEOUT", default_value = DEFAULT_DB_TIMEOUT, value_parser = humantime::parse_duration)]
    pub db_timeout: Duration,

    /// How often the PostgreSQL inbox (events published inside publishers' own transactions) is checked when no
    /// notification came.
    #[arg(long = "hub-inbox-poll", env = "HUB_INBOX_POLL", default_value = DEFAULT_INBOX_POLL, value_parser = humantime::parse_duration)]
    pub inbox_poll: Duration,

    /// Redis connection string (`redis://[:password@]host:port[/db]`); set alone, it selects the redis backend.
    #[arg(long = "redis-url", env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Prefix of the redis backend's keys: hubs sharing a Redis and a prefix share one log.
    #[arg(long = "hub-redis-prefix", env = "HUB_REDIS_PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,

    /// Most events the redis backend keeps, whatever their age (trimmed approximately, by whole stream nodes).
    #[arg(long = "hub-redis-max-events", env = "HUB_REDIS_MAX_EVENTS", default_value_t = DEFAULT_REDIS_MAX_EVENTS)]
    pub redis_max_events: usize,

    /// NATS servers, comma-separated (`nats://[user:pass@]host:4222,…`); set alone, it selects the nats backend.
    #[arg(long = "nats-url", env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// A NATS credentials file (JWT and NKey seed) for the nats backend.
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub nats_creds: Option<std::path::PathBuf>,

    /// The JetStream stream holding the log (subjects `<name>.>`); hubs naming the same stream share one log.
    #[arg(long = "hub-nats-stream", env = "HUB_NATS_STREAM", default_value = DEFAULT_NATS_STREAM)]
    pub nats_stream: String,

    /// Replicas of the stream (1, 3 or 5): created with this many; an existing stream with fewer is refused.
    #[arg(long = "hub-nats-replicas", env = "HUB_NATS_REPLICAS", default_value_t = 1)]
    pub nats_replicas: usize,

    /// Most events the stream keeps, whatever their age (0: no cap).
    #[arg(long = "hub-nats-max-events", env = "HUB_NATS_MAX_EVENTS", default_value_t = DEFAULT_NATS_MAX_EVENTS)]
    pub nats_max_events: usize,

    /// A TOML file of database sources: queries whose rows become events (docs/SOURCES.md).
    #[arg(long = "hub-sources", env = "HUB_SOURCES")]
    pub sources: Option<String>,

    /// How long events are retained (`24h`, `90m`, `7d`) [default: 24h; 10m on the redis backend].
    #[arg(long = "hub-retention", env = "HUB_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,

    /// The older broker's name for the retention, in seconds; HUB_RETENTION wins when both are set.
    #[arg(long = "realtime-replay-window-seconds", env = "REALTIME_REPLAY_WINDOW_SECONDS")]
    pub replay_window_seconds: Option<u64>,

    /// How long a hub waits at start-up for its backend (PostgreSQL, Redis, NATS) to answer, serving /healthz and a
    /// 503 /readyz meanwhile, before it exits.
    #[arg(long = "hub-start-timeout", env = "HUB_START_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    pub start_timeout: Duration,

    /// Topic policies: a TOML file's path, or the TOML text, of `[[policy]]` tables giving groups of topics their
    /// own retention, cap and presence (docs/RETENTION.md).
    #[arg(long = "hub-topic-policies", env = "HUB_TOPIC_POLICIES")]
    pub topic_policies: Option<String>,

    /// How often events past the retention are removed.
    #[arg(long = "hub-retention-interval", env = "HUB_RETENTION_INTERVAL", default_value = DEFAULT_RETENTION_INTERVAL, value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,

    /// How many events the memory backend keeps.
    #[arg(long = "hub-memory-capacity", env = "HUB_MEMORY_CAPACITY", default_value_t = DEFAULT_MEMORY_CAPACITY)]
    pub memory_capacity: usize,

    /// On a shared backend, how many of the newest events the hub keeps in memory to answer reads near the head
    /// (long-polls, resumes a moment back, live-only subscriptions) without asking the backend; 0 turns it off.
    #[arg(long = "hub-recent-events", env = "HUB_RECENT_EVENTS", default_value_t = DEFAULT_RECENT_EVENTS)]
    pub recent_events: usize,

    /// Shared secret for HS256 tokens. Without any key the hub runs in development mode and accepts every request.
    #[arg(long = "hub-jwt-secret", env = "HUB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM public key for RS256 or ES256 tokens.
    #[arg(long = "hub-jwt-public-key", env = "HUB_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// When set, tokens must carry this audience (`aud`); others are refused.
    #[arg(long = "hub-jwt-audience", env = "HUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// When set, tokens must carry this issuer (`iss`); others are refused.
    #[arg(long = "hub-jwt-issuer", env = "HUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// The identity provider's JSON Web Key Set: tokens are verified with the key their `kid` names; the set is
    /// fetched at start, on an unknown `kid` (at most once per HUB_JWT_JWKS_MIN_INTERVAL) and every 5 minutes.
    #[arg(long = "hub-jwt-jwks-url", env = "HUB_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// CA certificates (PEM) trusted for fetching the JWKS over HTTPS, beside the system's: a private identity
    /// provider's own CA. A file path, or the PEM text itself.
    #[arg(long = "hub-jwt-jwks-ca", env = "HUB_JWT_JWKS_CA")]
    pub jwt_jwks_ca: Option<String>,

    /// Least time between two fetches of the JWKS caused by unknown `kid`s.
    #[arg(long = "hub-jwt-jwks-min-interval", env = "HUB_JWT_JWKS_MIN_INTERVAL", default_value = DEFAULT_JWKS_MIN_INTERVAL, value_parser = humantime::parse_duration)]
    pub jwt_jwks_min_interval: Duration,

    /// Allow development mode (no key: every request accepted) on an address other than loopback.
    #[arg(long = "hub-insecure", env = "HUB_INSECURE", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub insecure: bool,

    /// Origins allowed to open WebSockets, comma-separated [default: the CORS origins and the hub's own origin].
    /// Requests without an Origin (non-browser clients) are always allowed.
    #[arg(long = "hub-allowed-origins", env = "HUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Scope keys accepted as query parameters besides the well-known ones (org_id, project_id, env, run_id,
    /// task_id, deploy_id), comma-separated; any other parameter that is not reserved is refused with 400.
    #[arg(long = "hub-scope-keys", env = "HUB_SCOPE_KEYS", value_delimiter = ',')]
    pub scope_keys: Vec<String>,

    /// Clock-skew allowance for `exp` and `nbf`; an open connection is closed this long after its token's `exp`.
    #[arg(long = "hub-jwt-leeway", env = "HUB_JWT_LEEWAY", default_value = DEFAULT_JWT_LEEWAY, value_parser = humantime::parse_duration)]
    pub jwt_leeway: Duration,

    /// How long a revocation (`POST /api/admin/revoke`) lasts when the request names no `until`.
    #[arg(long = "hub-revocation-ttl", env = "HUB_REVOCATION_TTL", default_value = DEFAULT_REVOCATION_TTL, value_parser = humantime::parse_duration)]
    pub revocation_ttl: Duration,

    /// This instance's name in welcome frames and health answers [default: the host name].
    #[arg(long = "hub-node-id", env = "HUB_NODE_ID")]
    pub node_id: Option<String>,

    /// Interval of WebSocket pings; a peer silent for twice this long is disconnected.
    #[arg(long = "hub-heartbeat", env = "HUB_HEARTBEAT", default_value = DEFAULT_HEARTBEAT, value_parser = humantime::parse_duration)]
    pub heartbeat: Duration,

    /// Interval of SSE heartbeat comments (`: hb`) that keep proxies from closing idle streams.
    #[arg(long = "hub-sse-heartbeat", env = "HUB_SSE_HEARTBEAT", default_value = DEFAULT_SSE_HEARTBEAT, value_parser = humantime::parse_duration)]
    pub sse_heartbeat: Duration,

    /// On SIGTERM, how long open connections get to close before the process exits.
    #[arg(long = "hub-shutdown-grace", env = "HUB_SHUTDOWN_GRACE", default_value = DEFAULT_SHUTDOWN_GRACE, value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// HTTP worker threads [default: one per core].
    #[arg(long = "hub-workers", env = "HUB_WORKERS")]
    pub workers: Option<usize>,

    /// Origins allowed to call the hub from a browser on another origin (CORS), comma-separated; `*` allows any.
    /// Empty: same-origin only. Credentials are never allowed: tokens travel in headers or `access_token`.
    #[arg(long = "hub-cors-origins", env = "HUB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Extra secret key names, comma-separated, masked in published events on top of the built-in policy.
    #[arg(long = "hub-redact-keys", env = "HUB_REDACT_KEYS", value_delimiter = ',')]
    pub redact_keys: Vec<String>,

    /// Largest client WebSocket frame; larger ones get a `too_large` error.
    #[arg(long = "hub-max-frame-bytes", env = "HUB_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Largest serialized event payload.
    #[arg(long = "hub-max-payload-bytes", env = "HUB_MAX_PAYLOAD_BYTES", default_value_t = DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,

    /// Largest `POST /api/publish` body.
    #[arg(long = "hub-max-publish-bytes", env = "HUB_MAX_PUBLISH_BYTES", default_value_t = DEFAULT_MAX_PUBLISH_BYTES)]
    pub max_publish_bytes: usize,

    /// Most events in one publish batch.
    #[arg(long = "hub-max-batch", env = "HUB_MAX_BATCH", default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,

    /// Most subscriptions one connection may hold.
    #[arg(long = "hub-max-subscriptions", env = "HUB_MAX_SUBSCRIPTIONS", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,

    /// Most open WebSocket and SSE connections on this hub (past it: close 4029, or 429 for SSE).
    #[arg(long = "hub-max-connections", env = "HUB_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most open connections per token subject (`sub`).
    #[arg(long = "hub-max-connections-per-subject", env = "HUB_MAX_CONNECTIONS_PER_SUBJECT", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_SUBJECT)]
    pub max_connections_per_subject: usize,

    /// Most long-poll requests waiting at once (past it: 429 `limit_exceeded`).
    #[arg(long = "hub-max-poll-waiters", env = "HUB_MAX_POLL_WAITERS", default_value_t = DEFAULT_MAX_POLL_WAITERS)]
    pub max_poll_waiters: usize,

    /// Publish requests per second per token subject (or peer address without a token), bursts of twice that;
    /// 0 turns the limit off.
    #[arg(long = "hub-publish-rate", env = "HUB_PUBLISH_RATE", default_value_t = DEFAULT_PUBLISH_RATE)]
    pub publish_rate: u32,

    /// Subscribe frames per second one connection may send (bursts of twice that).
    #[arg(long = "hub-subscribe-rate", env = "HUB_SUBSCRIBE_RATE", default_value_t = DEFAULT_SUBSCRIBE_RATE)]
    pub subscribe_rate: u32,

    /// Malformed or binary frames one connection may send before it is closed with 4009.
    #[arg(long = "hub-protocol-tolerance", env = "HUB_PROTOCOL_TOLERANCE", default_value_t = DEFAULT_PROTOCOL_TOLERANCE)]
    pub protocol_tolerance: u32,

    /// Bytes written to a connection but not yet taken by the network; past this the client is a slow consumer
    /// and is closed (4008).
    #[arg(long = "hub-max-outbound-bytes", env = "HUB_MAX_OUTBOUND_BYTES", default_value_t = DEFAULT_MAX_OUTBOUND_BYTES)]
    pub max_outbound_bytes: usize,

    /// The kernel's send buffer of each connection, in bytes (`SO_SNDBUF`); 0 leaves it to the kernel, which
    /// grows it up to `net.ipv4.tcp_wmem` (4 MiB by default) for a reader that stopped. A cap bounds what a
    /// stalled connection holds in the kernel and makes it a slow consumer that much sooner.
    #[arg(long = "hub-socket-send-buffer", env = "HUB_SOCKET_SEND_BUFFER", default_value_t = 0)]
    pub socket_send_buffer: usize,
}

impl Default for Settings {
    /// The defaults, without reading the environment (what tests start from).
    fn default() -> Self {
        let duration = |text| humantime::parse_duration(text).expect("the default durations parse");
        Self {
            bind: DEFAULT_BIND.to_owned(),
            backend: None,
            database_url: None,
            db_pool_size: DEFAULT_DB_POOL_SIZE,
            inbox_poll: duration(DEFAULT_INBOX_POLL),
            db_timeout: duration(DEFAULT_DB_TIMEOUT),
            redis_url: None,
            redis_prefix: DEFAULT_REDIS_PREFIX.to_owned(),
            redis_max_events: DEFAULT_REDIS_MAX_EVENTS,
            nats_url: None,
            nats_creds: None,
            nats_stream: DEFAULT_NATS_STREAM.to_owned(),
            nats_replicas: 1,
            nats_max_events: DEFAULT_NATS_MAX_EVENTS,
            sources: None,
            retention: None,
            topic_policies: None,
            start_timeout: Duration::from_secs(300),
            replay_window_seconds: None,
            retention_interval: duration(DEFAULT_RETENTION_INTERVAL),
            memory_capacity: DEFAULT_MEMORY_CAPACITY,
            recent_events: DEFAULT_RECENT_EVENTS,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_leeway: duration(DEFAULT_JWT_LEEWAY),
            revocation_ttl: duration(DEFAULT_REVOCATION_TTL),
            jwt_audience: None,
            jwt_issuer: None,
            jwt_jwks_url: None,
            jwt_jwks_ca: None,
            jwt_jwks_min_interval: duration(DEFAULT_JWKS_MIN_INTERVAL),
            insecure: false,
            allowed_origins: Vec::new(),
            scope_keys: Vec::new(),
            node_id: None,
            heartbeat: duration(DEFAULT_HEARTBEAT),
            shutdown_grace: duration(DEFAULT_SHUTDOWN_GRACE),
            sse_heartbeat: duration(DEFAULT_SSE_HEARTBEAT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_subject: DEFAULT_MAX_CONNECTIONS_PER_SUBJECT,
            max_poll_waiters: DEFAULT_MAX_POLL_WAITERS,
            publish_rate: DEFAULT_PUBLISH_RATE,
            workers: None,
            cors_origins: Vec::new(),
            redact_keys: Vec::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_publish_bytes: DEFAULT_MAX_PUBLISH_BYTES,
            max_batch: DEFAULT_MAX_BATCH,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
            subscribe_rate: DEFAULT_SUBSCRIBE_RATE,
            protocol_tolerance: DEFAULT_PROTOCOL_TOLERANCE,
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            socket_send_buffer: 0,
        }
    }
}

impl Settings {
    /// The backend: `HUB_BACKEND`, else its alias `REALTIME_BACKEND`, else redis when `REDIS_URL` is set (as the
    /// PubSub layer the hub replaces did), nats when `NATS_URL` is, else memory.
    pub fn resolve_backend(&self) -> Result<Backend, String> {
        if let Some(backend) = self.backend {
            return Ok(backend);
        }
        match std::env::var("REALTIME_BACKEND") {
            Ok(name) => Backend::from_str(&name, true)
                .map_err(|_| format!("REALTIME_BACKEND must be memory, postgres, redis or nats, got {name:?}")),
            Err(_) if self.redis_url.is_some() => Ok(Backend::Redis),
            Err(_) if self.nats_url.is_some() => Ok(Backend::Nats),
            Err(_) => Ok(Backend::Memory),
        }
    }

    /// How long events are kept: `HUB_RETENTION`, else `REALTIME_REPLAY_WINDOW_SECONDS`, else the backend's
    /// default (24 hours; 10 minutes on redis, whose log lives in memory).
    pub fn retention_for(&self, backend: Backend) -> Duration {
        self.retention.or(self.replay_window_seconds.map(Duration::from_secs)).unwrap_or(match backend {
            Backend::Redis => DEFAULT_REDIS_RETENTION,
            Backend::Memory | Backend::Postgres | Backend::Nats => DEFAULT_RETENTION,
        })
    }

    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            hostname::get().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "hub".to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_settings_match_the_documented_defaults() {
        let s = Settings::default();
        assert_eq!(s.bind, "127.0.0.1:8080");
        assert_eq!(s.retention_for(Backend::Postgres), Duration::from_secs(24 * 3600));
        assert_eq!(s.retention_for(Backend::Redis), Duration::from_secs(600));
        assert_eq!(s.memory_capacity, 100_000);
        assert_eq!(s.heartbeat, Duration::from_secs(25));
    }

    #[test]
    fn the_older_replay_window_name_sets_the_retention_unless_hub_retention_does() {
        let window = Settings { replay_window_seconds: Some(120), ..Settings::default() };
        assert_eq!(window.retention_for(Backend::Redis), Duration::from_secs(120));
        let both = Settings { retention: Some(Duration::from_secs(60)), ..window };
        assert_eq!(both.retention_for(Backend::Memory), Duration::from_secs(60));
    }

    #[test]
    fn a_redis_url_alone_selects_the_redis_backend() {
        if std::env::var("REALTIME_BACKEND").is_ok() {
            return; // the alias would win; the environment of this test run names a backend
        }
        let s = Settings { redis_url: Some("redis://127.0.0.1:6379".into()), ..Settings::default() };
        assert_eq!(s.resolve_backend(), Ok(Backend::Redis));
        let named = Settings { backend: Some(Backend::Memory), ..s };
        assert_eq!(named.resolve_backend(), Ok(Backend::Memory));
        let nats = Settings { nats_url: Some("nats://127.0.0.1:4222".into()), ..Settings::default() };
        assert_eq!(nats.resolve_backend(), Ok(Backend::Nats));
        assert_eq!(Settings::default().resolve_backend(), Ok(Backend::Memory));
    }
}
