//! The Redis sink: straight into the hubs' Redis event log, for services that run next to a hub on the redis
//! backend.

use async_trait::async_trait;
use protocol::NewEvent;
use storage::{EventLog, RedisLog, RedisSettings, Retention};

use crate::Result;
use crate::publisher::{Published, Sink};

/// Appends to the Redis log the hubs read (the same key prefix, `realtime` unless the hubs set
/// `HUB_REDIS_PREFIX`). Ids are assigned by the log as for any publish; the hubs' storage actors wake on the append.
/// Retention is the hubs' business: each event goes to the stream of the topic policy the hubs stored for its
/// topic (`HUB_TOPIC_POLICIES`), with that policy's cap; this sink never trims by age.
pub struct RedisSink {
    log: RedisLog,
}

impl RedisSink {
    /// Connects to `url` (`redis://host:port`) and the log under `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let retention = Retention { max_events: 0, ..Retention::default() };
        let settings = RedisSettings { url: url.to_owned(), prefix: prefix.to_owned(), retention, policies: None };
        Ok(Self { log: RedisLog::connect(settings).await? })
    }
}

#[async_trait]
impl Sink for RedisSink {
    async fn send(&self, events: Vec<NewEvent>) -> Result<Published> {
        Ok(Published { ids: Some(self.log.append(events).await?) })
    }
}
