//! The connection to the NATS cluster, the server's version check, and what the answers' errors mean.

use std::str::FromStr;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamError, GetStreamErrorKind};
use async_nats::{ConnectOptions, ServerAddr};

use crate::policy::TopicPolicies;
use crate::{Error, Result, Retention};

/// How the NATS log connects and what stream it keeps.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// One or more servers, comma-separated (`nats://user:pass@host:4222,nats://host2:4222`).
    pub urls: String,
    /// A credentials file (JWT and NKey seed), for clusters that use decentralised auth.
    pub creds: Option<std::path::PathBuf>,
    /// The stream's name; its subjects are `<name>.>`.
    pub stream: String,
    /// Replicas the stream must have (created with this many; an existing stream with fewer is refused).
    pub replicas: usize,
    /// `max_age` is the stream's `max_age`, `max_events` its message cap (0: none): the default policy's.
    pub retention: Retention,
    /// The topic policies this process keeps (the hubs); `None` follows the routes the hubs recorded (the publisher
    /// crate's sink).
    pub policies: Option<TopicPolicies>,
    /// Whether this process keeps the stream: creates it when absent and aligns its retention (the hubs); a
    /// publishing service only appends to the stream the hubs keep.
    pub keeps_stream: bool,
}

/// The lowest JetStream API level the hub runs on: NATS 2.12's.
const MIN_API_LEVEL: u64 = 2;
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long one JetStream request waits for its answer.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub(super) fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unavailable(Box::new(e))
}

pub(super) fn corrupt(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("nats log: {what}"))
}

/// Whether looking the stream up failed because it does not exist (deleted, or never created).
pub(super) fn stream_missing(e: &GetStreamError) -> bool {
    matches!(e.kind(), GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// Refuses a server older than 2.12 (JetStream API level 2), with the reason.
pub(super) async fn check_api_level(client: &async_nats::Client) -> Result<()> {
    let version = client.server_info().version;
    let answer = client.request("$JS.API.INFO", bytes::Bytes::new()).await.map_err(unavailable)?;
    let info: serde_json::Value =
        serde_json::from_slice(&answer.payload).map_err(|e| corrupt(format!("JetStream's account info: {e}")))?;
    if let Some(error) = info.get("error") {
        return Err(Error::Config(format!("NATS {version} has no JetStream for this account: {error}")));
    }
    let level = info.pointer("/api/level").and_then(serde_json::Value::as_u64).unwrap_or(0);
    if level < MIN_API_LEVEL {
        return Err(Error::Config(format!(
            "NATS {version} speaks JetStream API level {level}; the hub needs NATS 2.12 or later (level \
             {MIN_API_LEVEL}): upgrade the servers (docs/NATS.md says how)"
        )));
    }
    Ok(())
}

/// A client of the cluster `settings` names (its servers, credentials and timeouts), reconnecting for ever.
pub(crate) async fn connect_client(settings: &NatsSettings) -> Result<async_nats::Client> {
    let mut servers = Vec::new();
    let mut options = ConnectOptions::new()
        .name("realtime-hub")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        // Keep reconnecting to whichever server of the cluster answers; the storage actor re-reads from its
        // cursor after a reconnect.
        .max_reconnects(None);
    for url in settings.urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let server = ServerAddr::from_str(url).map_err(|e| Error::Config(format!("NATS_URL: {url:?}: {e}")))?;
        if let (Some(user), Some(pass)) = (server.username(), server.password()) {
            options = options.user_and_password(user.to_owned(), pass.to_owned());
        }
        servers.push(server);
    }
    if servers.is_empty() {
        return Err(Error::Config("NATS_URL names no server".into()));
    }
    if let Some(creds) = &settings.creds {
        options = options
            .credentials_file(creds)
            .await
            .map_err(|e| Error::Config(format!("NATS_CREDS: cannot read {}: {e}", creds.display())))?;
    }
    options.connect(servers).await.map_err(unavailable)
}
