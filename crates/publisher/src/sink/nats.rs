//! The NATS sink: straight into the hubs' JetStream stream, for services that run next to hubs on the nats backend.

use async_trait::async_trait;
use protocol::NewEvent;
use storage::{EventLog, NatsLog, NatsSettings, Retention};

use crate::Result;
use crate::publisher::{Published, Sink};

/// Appends to the stream the hubs read (`realtime` unless the hubs set `HUB_NATS_STREAM`). Ids are the stream's
/// sequences, as for any publish; the hubs' consumers carry the events to them at once. The stream is the hubs'
/// business: this sink neither creates it nor changes its retention, and refuses to start when it is missing. Each
/// event goes to the subject of its topic's policy, by the routes the hubs recorded (read again every 10 s).
pub struct NatsSink {
    log: NatsLog,
}

impl NatsSink {
    /// Connects to `urls` (`nats://host:4222`, comma-separated) and the stream `stream`, with an optional
    /// credentials file.
    pub async fn connect(urls: &str, stream: &str, creds: Option<std::path::PathBuf>) -> Result<Self> {
        let settings = NatsSettings {
            urls: urls.to_owned(),
            creds,
            stream: stream.to_owned(),
            replicas: 1,
            retention: Retention { max_events: 0, ..Retention::default() },
            keeps_stream: false,
            policies: None,
        };
        Ok(Self { log: NatsLog::connect(settings).await? })
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn send(&self, events: Vec<NewEvent>) -> Result<Published> {
        Ok(Published { ids: Some(self.log.append(events).await?) })
    }
}
