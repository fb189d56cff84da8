//! Building and running the hub: [`Application::build`], [`Application::port`], [`Application::run_until_stopped`].

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use storage::log_actor::TailSettings;
use storage::{
    EventLog, EventLogActor, LogHealth, LogQuery, MemoryLog, NatsLog, NatsSettings, PgLog, PgSettings, RecentEvents,
    RedisLog, RedisSettings, Retention, TopicPolicies, WindowedLog,
};
use tokio::sync::watch;
use tracing::{info, warn};
use tracing_actix_web::TracingLogger;

use crate::auth::Authenticator;
use crate::cluster::ClusterAgent;
use crate::fanout::dispatcher::Dispatcher;
use crate::fanout::poll_wakes::{self, PollWakes};
use crate::limits::{ConnectionLimiter, CountLimiter, KeyedRate};
use crate::routes;
use crate::settings::{Backend, Settings};
use crate::state::HubState;
use crate::telemetry;
use crate::telemetry::stats::HubStats;

pub struct Application {
    port: u16,
    server: Server,
    shutdown: Shutdown,
}

/// Starts a graceful shutdown: readiness fails, new connections are refused, sessions close with 1012, and the
/// server stops once they are gone or the grace period is over.
#[derive(Clone)]
pub struct Shutdown {
    signal: Arc<watch::Sender<bool>>,
    server: ServerHandle,
    state: web::Data<HubState>,
    grace: Duration,
}

impl Shutdown {
    pub async fn begin(&self) {
        if self.signal.send_replace(true) {
            return;
        }
        self.state.sessions.close_all();
        info!(grace = ?self.grace, "shutting down");
        let deadline = Instant::now() + self.grace;
        while self.state.connections.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.server.stop(true).await;
    }

    /// Stops serving at once, dropping every connection, as a crashed process would.
    pub async fn abort(&self) {
        self.signal.send_replace(true);
        self.state.sessions.close_all();
        self.server.stop(false).await;
    }
}

impl Application {
    /// Opens the log, starts the actors and binds the listener (port 0 picks a free port).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let backend = settings.resolve_backend().map_err(anyhow::Error::msg)?;
        let auth = Authenticator::from_settings(&settings).await?;
        if auth.is_development() {
            refuse_insecure_bind(&settings)?;
        }
        let publish_rate = (settings.publish_rate > 0).then(|| KeyedRate::new(settings.publish_rate));
        let connections =
            Arc::new(ConnectionLimiter::new(settings.max_connections, settings.max_connections_per_subject));
        let poll_waiters = Arc::new(CountLimiter::new(settings.max_poll_waiters));
        let redact_keys = settings.redact_keys.clone();
        let sources = match &settings.sources {
            Some(path) => crate::sources::config::load(path, |name| match name {
                // The hub's own DATABASE_URL (flag or variable) serves the sources that name it.
                "DATABASE_URL" => settings.database_url.clone(),
                other => std::env::var(other).ok(),
            })?,
            None => Vec::new(),
        };
        let policies = Arc::new(topic_policies(&settings, backend)?);
        if backend == Backend::Nats && settings.max_batch > storage::nats::MAX_ATOMIC_BATCH {
            anyhow::bail!(
                "HUB_MAX_BATCH={} is above {}: on NATS a request's events are one atomic batch, which JetStream caps \
                 at {}",
                settings.max_batch,
                storage::nats::MAX_ATOMIC_BATCH,
                storage::nats::MAX_ATOMIC_BATCH
            );
        }
        // Bound first: while the backend is not there yet (a cluster that is still forming, a database that
        // starts with the hub), the hub answers /healthz and a /readyz that says why it is not ready.
        let listener = TcpListener::bind(&settings.bind).with_context(|| format!("cannot bind {}", settings.bind))?;
        let node = settings.node_id();
        let sessions = Arc::new(crate::fanout::sessions::Sessions::default());
        let member = Member { node: node.clone(), sessions: sessions.clone(), revocations: auth.revocations().clone() };
        // Before the backend: it sets gauges as it connects (PostgreSQL's `hub_sequencer`), which a recorder
        // installed later would never see.
        telemetry::prometheus();
        let (backend_log, cluster) = wait_for_backend(&settings, backend, &policies, &member, &listener).await?;
        // The memory backend is itself in memory; a shared backend gets the window of newest events.
        let recent = (backend != Backend::Memory && settings.recent_events > 0).then(|| {
            // Never more than the backend keeps: a window past a length cap would answer what the log has trimmed.
            let capacity =
                length_cap(&settings, backend).map_or(settings.recent_events, |cap| cap.min(settings.recent_events));
            Arc::new(RecentEvents::new(capacity, settings.retention_for(backend)))
        });
        let log: Arc<dyn EventLog> = match &recent {
            Some(recent) => Arc::new(WindowedLog::new(backend_log.clone(), recent.clone())),
            None => backend_log.clone(),
        };
        if auth.is_development() {
            warn!(
                "DEVELOPMENT MODE: no HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY or HUB_JWT_JWKS_URL is configured, so \
                 every request is accepted without a token. Configure a key before exposing this hub."
            );
        }
        crate::telemetry::instruments::register(
            backend.name(),
            &policies.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
            &sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        );
        let stats = Arc::new(HubStats::default());
        let health = Arc::new(LogHealth::default());
        let workers = settings.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        // One sending thread per further worker, so a step the fan-out sends itself uses the cores the workers
        // would (at most four in all: past that, a step of a few thousand sends gains less than a wake costs).
        let dispatcher = Dispatcher::new(stats.clone(), workers.clamp(1, 4) - 1).start();
        let tail = TailSettings { prune_interval: settings.retention_interval, ..TailSettings::default() };
        // Read before the listener is bound, so before any subscription can start: see `EventLogActor::new`.
        let head = backend_log.bounds(&LogQuery::all()).await.context("cannot read the event log's head")?.head;
        let follower = EventLogActor::new(backend_log, dispatcher.clone().recipient(), health.clone(), tail, head);
        match recent {
            Some(recent) => follower.with_recent(recent).start(),
            None => follower.start(),
        };
        let wakes = Arc::new(PollWakes::new(dispatcher.clone()));
        let sweeping = wakes.clone();
        actix_web::rt::spawn(async move {
            let mut every = tokio::time::interval(poll_wakes::LINGER / 3);
            loop {
                every.tick().await;
                sweeping.sweep(Instant::now());
            }
        });

        if settings.socket_send_buffer > 0 {
            // Accepted connections inherit the listening socket's buffer size.
            socket2::SockRef::from(&listener)
                .set_send_buffer_size(settings.socket_send_buffer)
                .context("HUB_SOCKET_SEND_BUFFER")?;
        }
        let port = listener.local_addr()?.port();
        let (signal, shutdown_rx) = watch::channel(false);
        let grace = settings.shutdown_grace;
        let settings_scope_keys = settings.scope_keys.clone();
        let allowed_origins = if settings.allowed_origins.is_empty() {
            settings.cors_origins.clone()
        } else {
            settings.allowed_origins.clone()
        };
        let state = web::Data::new(HubState {
            log,
            health,
            dispatcher,
            stats,
            settings: Arc::new(settings),
            node: node.clone(),
            auth,
            connections,
            poll_waiters,
            poll_wakes: wakes,
            redactor: publisher::Redactor::new().with_keys(&redact_keys),
            publish_rate,
            scope_keys: routes::query::scope_keys(&settings_scope_keys),
            allowed_origins,
            shutdown: shutdown_rx,
            sessions,
            cluster,
            policies,
        });
        crate::connections::heartbeat::start_heartbeats(&state);
        if state.auth.jwks().is_some() {
            tokio::spawn(refresh_jwks(state.clone()));
        }
        if !sources.is_empty() {
            info!(count = sources.len(), "database sources configured");
            let publishing = crate::sources::Publishing {
                log: state.log.clone(),
                redactor: state.redactor.clone(),
                limits: state.event_limits(),
            };
            crate::sources::start(sources, publishing, state.shutdown.clone());
        }
        let app_state = state.clone();
        let cors_origins = app_state.settings.cors_origins.clone();
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(routes::token_in_query::move_token_to_header))
                .wrap(cors(&cors_origins))
                .app_data(app_state.clone())
                .configure(routes::configure_streams)
                .service(web::scope("").wrap(TracingLogger::default()).configure(routes::configure))
        })
        .workers(workers)
        .on_connect(crate::connections::socket::remember)
        // Events are small writes to connections that rarely send anything back: without TCP_NODELAY, Nagle's
        // algorithm holds a write until the previous one is acknowledged, and the client delays its ACK by up to
        // 40 ms (measured: SSE delivery 40 ms after publish with it, 5 ms without).
        .tcp_nodelay(true)
        .disable_signals()
        .shutdown_timeout(grace.as_secs().max(1))
        .listen(listener)?
        .run();
        info!(port, node, backend = backend.name(), "hub listening");
        let shutdown = Shutdown { signal: Arc::new(signal), server: server.handle(), state, grace };
        Ok(Self { port, server, shutdown })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Serves until stopped; with `signals`, SIGTERM and SIGINT start a graceful shutdown.
    pub async fn run_until_stopped(self, signals: bool) -> std::io::Result<()> {
        if signals {
            let shutdown = self.shutdown.clone();
            actix_web::rt::spawn(async move {
                wait_for_signal().await;
                shutdown.begin().await;
            });
        }
        self.server.await
    }
}

/// Development mode accepts every request: only on loopback, unless `HUB_INSECURE=1` says it is meant.
fn refuse_insecure_bind(settings: &Settings) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let addresses: Vec<_> =
        settings.bind.to_socket_addrs().with_context(|| format!("HUB_BIND {}", settings.bind))?.collect();
    if addresses.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    anyhow::ensure!(
        settings.insecure,
        "refusing to start: no HUB_JWT_SECRET, HUB_JWT_PUBLIC_KEY or HUB_JWT_JWKS_URL is configured (development \
         mode accepts every request) and HUB_BIND {} is not a loopback address. Configure a key, or set \
         HUB_INSECURE=1 to run an open hub on purpose.",
        settings.bind
    );
    warn!(bind = settings.bind, "HUB_INSECURE=1: an open hub, without authentication, on a non-loopback address");
    Ok(())
}

/// Fetches the identity provider's keys every few minutes, so a removed key stops being accepted.
async fn refresh_jwks(state: web::Data<HubState>) {
    let mut shutdown = state.shutdown.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(crate::auth::JWKS_REFRESH) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        if let Some(jwks) = state.auth.jwks()
            && let Err(e) = jwks.refresh().await
        {
            warn!(error = %format!("{e:#}"), "fetching the JWKS failed; keeping the keys held");
        }
    }
}

/// The most events a shared backend keeps whatever their age, when it is capped.
fn length_cap(settings: &Settings, backend: Backend) -> Option<usize> {
    let cap = match backend {
        Backend::Redis => settings.redis_max_events,
        Backend::Nats => settings.nats_max_events,
        Backend::Memory | Backend::Postgres => 0,
    };
    (cap > 0).then_some(cap)
}

/// What this hub is to the cluster it joins: its node id, and the sessions and revocations the cluster's commands
/// reach.
struct Member {
    node: String,
    sessions: Arc<crate::fanout::sessions::Sessions>,
    revocations: Arc<crate::auth::Revocations>,
}

/// How often a hub waiting for its backend tries again, and says why it is still waiting.
const START_RETRY: Duration = Duration::from_secs(2);

/// Opens the backend's log and joins the cluster on its bus, trying again while the backend cannot be reached (a
/// refused connection, a cluster still forming: two hubs started together on a NATS cluster still settling, one
/// looking up the bus's stream the moment after the other created it), for at most `HUB_START_TIMEOUT` in all; a
/// configuration the backend refuses fails at once. Meanwhile `listener` answers `/healthz` 200 and everything else
/// 503 with the reason.
async fn wait_for_backend(
    settings: &Settings,
    backend: Backend,
    policies: &TopicPolicies,
    member: &Member,
    listener: &TcpListener,
) -> anyhow::Result<(Arc<dyn EventLog>, Arc<ClusterAgent>)> {
    let started = Instant::now();
    let mut waiting: Option<(ServerHandle, Arc<std::sync::Mutex<String>>)> = None;
    let opened = loop {
        let attempt = async {
            let log = open_log(settings, backend, policies).await?;
            let bus = open_cluster(settings, backend).await?;
            let (sessions, revocations) = (member.sessions.clone(), member.revocations.clone());
            let agent = ClusterAgent::start(member.node.clone(), bus, sessions, revocations, settings.heartbeat)
                .await
                .context("cannot join the cluster")?;
            Ok::<_, anyhow::Error>((log, agent))
        };
        let error = match attempt.await {
            Ok(opened) => break Ok(opened),
            Err(e) => e,
        };
        let reachable_later = error
            .chain()
            .any(|cause| matches!(cause.downcast_ref::<storage::Error>(), Some(storage::Error::Unavailable(_))));
        if !reachable_later || started.elapsed() + START_RETRY > settings.start_timeout {
            break Err(error);
        }
        let reason = format!("{error:#}");
        warn!(
            reason,
            waited_s = started.elapsed().as_secs(),
            timeout_s = settings.start_timeout.as_secs(),
            "the backend is not reachable yet; trying again"
        );
        match &waiting {
            Some((_, shown)) => *shown.lock().unwrap_or_else(|e| e.into_inner()) = reason,
            None => waiting = Some(serve_while_starting(listener, reason)?),
        }
        tokio::time::sleep(START_RETRY).await;
    };
    if let Some((server, _)) = waiting {
        server.stop(false).await;
    }
    if opened.is_ok() && started.elapsed() > START_RETRY {
        info!(waited_s = started.elapsed().as_secs(), "the backend answered");
    }
    opened
}

/// While the backend is awaited: `/healthz` 200 (the process is alive), `/readyz` and every other route 503 with
/// `reason`, which the caller updates.
fn serve_while_starting(
    listener: &TcpListener,
    reason: String,
) -> anyhow::Result<(ServerHandle, Arc<std::sync::Mutex<String>>)> {
    let shown = Arc::new(std::sync::Mutex::new(reason));
    let reason = shown.clone();
    let server = HttpServer::new(move || {
        let reason = reason.clone();
        App::new().route("/healthz", web::get().to(|| async { HttpResponse::Ok().json(serde_json::json!({"status": "starting"})) })).default_service(web::to(move || {
            let reason = reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
            async move {
                HttpResponse::ServiceUnavailable().json(serde_json::json!({
                    "status": "starting",
                    "error": {"code": "unavailable", "message": format!("the hub is waiting for its backend: {reason}")},
                }))
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .listen(listener.try_clone().context("cannot share the listening socket")?)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((handle, shown))
}

/// The topic policies of `HUB_TOPIC_POLICIES` over the global retention; a policy the backend cannot keep is refused
/// with the reason.
fn topic_policies(settings: &Settings, backend: Backend) -> anyhow::Result<TopicPolicies> {
    let max_events = match backend {
        Backend::Memory => settings.memory_capacity,
        Backend::Redis => settings.redis_max_events,
        Backend::Nats => settings.nats_max_events,
        // PostgreSQL bounds by count only the policies with a cap of their own.
        Backend::Postgres => settings.memory_capacity,
    };
    let retention = Retention { max_age: settings.retention_for(backend), max_events };
    let Some(value) = &settings.topic_policies else { return Ok(TopicPolicies::single(retention)) };
    let policies =
        TopicPolicies::from_setting(value, retention).map_err(|e| anyhow::anyhow!("HUB_TOPIC_POLICIES: {e}"))?;
    info!(policies = policies.len() - 1, "topic policies read");
    Ok(policies)
}

async fn open_log(
    settings: &Settings,
    backend: Backend,
    policies: &TopicPolicies,
) -> anyhow::Result<Arc<dyn EventLog>> {
    let retention = Retention { max_age: settings.retention_for(backend), max_events: settings.memory_capacity };
    match backend {
        Backend::Memory => Ok(Arc::new(MemoryLog::with_policies(policies.clone()))),
        Backend::Postgres => {
            let url = database_url(settings)?;
            let pg = PgSettings {
                url,
                pool_size: settings.db_pool_size,
                timeout: settings.db_timeout,
                inbox_poll: settings.inbox_poll,
                policies: policies.clone(),
            };
            let log = PgLog::connect(pg).await.context("cannot open the PostgreSQL event log")?;
            Ok(Arc::new(log))
        }
        Backend::Redis => {
            let url = settings.redis_url.clone().context("the redis backend needs REDIS_URL")?;
            if settings.backend.is_none() && std::env::var_os("REALTIME_BACKEND").is_none() {
                info!("REDIS_URL is set and no backend is named: using the redis backend");
            }
            let retention = Retention { max_events: settings.redis_max_events, ..retention };
            let policies = Some(policies.clone());
            let redis = RedisSettings { url, prefix: settings.redis_prefix.clone(), retention, policies };
            let log = RedisLog::connect(redis).await.context("cannot open the Redis event log")?;
            Ok(Arc::new(log))
        }
        Backend::Nats => {
            if settings.backend.is_none() && std::env::var_os("REALTIME_BACKEND").is_none() {
                info!("NATS_URL is set and no backend is named: using the nats backend");
            }
            let nats = NatsSettings { policies: Some(policies.clone()), ..nats_settings(settings)? };
            let log = NatsLog::connect(nats).await.context("cannot open the NATS event log")?;
            Ok(Arc::new(log))
        }
    }
}

/// The NATS log's settings, without its topic policies (which only the log keeps).
fn nats_settings(settings: &Settings) -> anyhow::Result<NatsSettings> {
    let urls = settings.nats_url.clone().context("the nats backend needs NATS_URL")?;
    let backend = Backend::Nats;
    let retention = Retention { max_age: settings.retention_for(backend), max_events: settings.nats_max_events };
    Ok(NatsSettings {
        urls,
        creds: settings.nats_creds.clone(),
        stream: settings.nats_stream.clone(),
        replicas: settings.nats_replicas,
        retention,
        keeps_stream: true,
        policies: None,
    })
}

/// What the hubs say to each other and the revocations they keep, over the backend the log uses.
async fn open_cluster(settings: &Settings, backend: Backend) -> anyhow::Result<Arc<dyn storage::Cluster>> {
    use storage::cluster::{memory::MemoryCluster, nats::NatsCluster, postgres::PgCluster, redis::RedisCluster};
    Ok(match backend {
        Backend::Memory => Arc::new(MemoryCluster::default()),
        Backend::Postgres => Arc::new(PgCluster::connect(&database_url(settings)?).await.context("PostgreSQL")?),
        Backend::Redis => {
            let url = settings.redis_url.as_deref().context("the redis backend needs REDIS_URL")?;
            Arc::new(RedisCluster::connect(url, &settings.redis_prefix).await.context("Redis")?)
        }
        Backend::Nats => Arc::new(NatsCluster::connect(&nats_settings(settings)?).await.context("NATS")?),
    })
}

/// CORS for browsers on other origins: GET and POST, the `Authorization`, `Content-Type` and `Last-Event-ID`
/// request headers, no credentials.
fn cors(origins: &[String]) -> actix_cors::Cors {
    let cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST"])
        .allowed_headers(["authorization", "content-type", "last-event-id"])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        return cors.allow_any_origin();
    }
    origins.iter().fold(cors, |cors, origin| cors.allowed_origin(origin))
}

fn database_url(settings: &Settings) -> anyhow::Result<String> {
    settings.database_url.clone().context("the postgres backend needs DATABASE_URL")
}

/// Brings the log's storage up to this release and returns (`hub migrate`): the PostgreSQL migrations (for
/// `DATABASE_URL`, unless another backend is named), or the Redis log's format (run it once every hub of the
/// cluster runs this release). NATS has nothing to migrate.
pub async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let backend = match settings.resolve_backend().map_err(anyhow::Error::msg)? {
        Backend::Memory if settings.database_url.is_some() => Backend::Postgres,
        backend => backend,
    };
    match backend {
        Backend::Postgres => {
            let pool = storage::postgres::connect_pool(&database_url(settings)?, 1, "realtime-hub-migrate").await?;
            storage::postgres::migrate(&pool).await.context("migrations failed")?;
            info!("migrations applied");
        }
        Backend::Redis => {
            let url = settings.redis_url.clone().context("the redis backend needs REDIS_URL")?;
            let retention = Retention { max_age: settings.retention_for(Backend::Redis), max_events: 0 };
            let redis = RedisSettings { url, prefix: settings.redis_prefix.clone(), retention, policies: None };
            let log = RedisLog::connect(redis).await.context("cannot open the Redis event log")?;
            if log.upgrade_format().await? {
                info!(prefix = settings.redis_prefix, "the Redis log now stores envelopes (format 2)");
            } else {
                info!(prefix = settings.redis_prefix, "the Redis log already stores envelopes (format 2)");
            }
        }
        backend => info!(?backend, "nothing to migrate"),
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        warn!("cannot listen for signals; stop the hub by killing it");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
