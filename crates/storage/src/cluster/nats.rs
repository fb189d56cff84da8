//! The cluster over NATS: messages on the core subject `hub-cluster.<stream>` (outside the log stream's subjects,
//! so never stored), records in the stream `<stream>-revocations`, one message per record on the subject
//! `hub-revocations.<stream>.<key in hex>` (at most one kept per subject; replicated like the log). A plain stream
//! rather than a key-value bucket: Debian's server 2.9 answers the current client's bucket requests in a shape it
//! cannot read. Each value carries its expiry, and expired records are removed as they are read.

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::debug;

use super::bus::{Cluster, Record, check_size};
use crate::nats::NatsSettings;
use crate::{Error, Result};

pub struct NatsCluster {
    client: async_nats::Client,
    js: jetstream::Context,
    subject: String,
    records: stream::Stream,
    /// `hub-revocations.<stream>.`: a record's subject is this and its key in hex.
    records_prefix: String,
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unavailable(Box::new(e))
}

/// Subject tokens allow `[-_a-zA-Z0-9]` safely: a record's key (a subject, a token id) is kept in hex.
fn to_key(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn from_key(hex: &str) -> Option<String> {
    let bytes = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok());
    String::from_utf8(bytes.collect::<Option<Vec<u8>>>()?).ok()
}

impl NatsCluster {
    /// A client of its own to the cluster the log uses, and the records' stream (created when absent).
    pub async fn connect(settings: &NatsSettings) -> Result<Self> {
        let client = crate::nats::connect_client(settings).await?;
        let js = jetstream::new(client.clone());
        let records_prefix = format!("hub-revocations.{}.", settings.stream);
        let config = stream::Config {
            name: format!("{}-revocations", settings.stream),
            subjects: vec![format!("{records_prefix}*")],
            max_messages_per_subject: 1,
            storage: stream::StorageType::File,
            num_replicas: settings.replicas,
            description: Some("realtime hub: revocations of token subjects and ids, each until its own expiry".into()),
            ..Default::default()
        };
        let records = js.get_or_create_stream(config).await.map_err(unavailable)?;
        Ok(Self { client, js, subject: format!("hub-cluster.{}", settings.stream), records, records_prefix })
    }

    fn record_subject(&self, key: &str) -> String {
        format!("{}{}", self.records_prefix, to_key(key))
    }
}

#[async_trait]
impl Cluster for NatsCluster {
    async fn broadcast(&self, message: &str) -> Result<()> {
        check_size(message)?;
        self.client.publish(self.subject.clone(), message.to_owned().into()).await.map_err(unavailable)?;
        // Sent now, not when the client's buffer next fills.
        self.client.flush().await.map_err(unavailable)
    }

    async fn listen(&self) -> Result<mpsc::UnboundedReceiver<String>> {
        // The client resubscribes by itself after a reconnect.
        let mut messages = self.client.subscribe(self.subject.clone()).await.map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                match String::from_utf8(message.payload.to_vec()) {
                    Ok(text) => {
                        if tx.send(text).is_err() {
                            return;
                        }
                    }
                    Err(e) => debug!(error = %e, "a cluster message that is not text is ignored"),
                }
            }
        });
        Ok(rx)
    }

    async fn put(&self, record: Record) -> Result<()> {
        let value = format!("{} {}", record.until.timestamp_millis(), record.value);
        let ack = self.js.publish(self.record_subject(&record.key), value.into()).await.map_err(unavailable)?;
        ack.await.map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        let subject = self.record_subject(key);
        if self.records.get_last_raw_message_by_subject(&subject).await.is_err() {
            return Ok(false);
        }
        self.records.purge().filter(subject).await.map_err(unavailable)?;
        Ok(true)
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let now = Utc::now();
        let mut subjects =
            self.records.info_with_subjects(format!("{}*", self.records_prefix)).await.map_err(unavailable)?;
        let mut held = Vec::new();
        while let Some(subject) = subjects.next().await {
            held.push(subject.map_err(unavailable)?.0);
        }
        let mut live = Vec::new();
        for subject in held {
            let Ok(message) = self.records.get_last_raw_message_by_subject(&subject).await else { continue };
            let record = std::str::from_utf8(&message.payload).ok().and_then(|text| {
                let (until, value) = text.split_once(' ')?;
                let until = DateTime::from_timestamp_millis(until.parse().ok()?)?;
                let key = from_key(subject.strip_prefix(&self.records_prefix)?)?;
                Some(Record { key, value: value.to_owned(), until })
            });
            match record {
                Some(record) if record.until > now => live.push(record),
                _ => {
                    let _ = self.records.purge().filter(subject).await;
                }
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_record_key_survives_the_subject_alphabet() {
        for key in ["sub:user@example.com", "jti:4f1c-ü/x y", ""] {
            let stored = to_key(key);
            assert!(stored.chars().all(|c| c.is_ascii_hexdigit()), "{stored}");
            assert_eq!(from_key(&stored).as_deref(), Some(key));
        }
    }
}
