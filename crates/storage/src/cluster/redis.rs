//! The cluster over Redis: messages by `PUBLISH {prefix}:cluster`, records in the hash `{prefix}:revocations`
//! (each field's value carries its expiry; expired fields are removed as they are read).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use redis::Client;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tracing::debug;

use super::bus::{Cluster, Record, check_size, reopen};
use crate::{Error, Result};

pub struct RedisCluster {
    client: Client,
    connection: ConnectionManager,
    channel: String,
    records: String,
}

fn unavailable(e: redis::RedisError) -> Error {
    Error::Unavailable(Box::new(e))
}

/// A record's value and expiry as one field value: the expiry in milliseconds, a space, the value.
fn encode(record: &Record) -> String {
    format!("{} {}", record.until.timestamp_millis(), record.value)
}

fn decode(key: String, field: &str) -> Option<Record> {
    let (until, value) = field.split_once(' ')?;
    let until = DateTime::from_timestamp_millis(until.parse().ok()?)?;
    Some(Record { key, value: value.to_owned(), until })
}

impl RedisCluster {
    /// Keys under `prefix`, as the log's (a hash tag, so one slot on a Redis Cluster).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = Client::open(url).map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
        let connection = ConnectionManager::new(client.clone()).await.map_err(unavailable)?;
        Ok(Self {
            client,
            connection,
            channel: format!("{{{prefix}}}:cluster"),
            records: format!("{{{prefix}}}:revocations"),
        })
    }
}

#[async_trait]
impl Cluster for RedisCluster {
    async fn broadcast(&self, message: &str) -> Result<()> {
        check_size(message)?;
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(&self.channel)
            .arg(message)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn listen(&self) -> Result<mpsc::UnboundedReceiver<String>> {
        // A connection of its own: a subscribed connection takes no other command.
        let (client, channel) = (self.client.clone(), self.channel.clone());
        let subscribe = move || {
            let (client, channel) = (client.clone(), channel.clone());
            async move {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub.into_on_message())
            }
        };
        let mut messages = subscribe().await.map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                while let Some(message) = messages.next().await {
                    match message.get_payload::<String>() {
                        Ok(text) => {
                            if tx.send(text).is_err() {
                                return;
                            }
                        }
                        Err(e) => debug!(error = %e, "a cluster message that is not text is ignored"),
                    }
                }
                debug!("the cluster subscription's connection was lost; subscribing again");
                match reopen(&tx, &subscribe).await {
                    Some(again) => messages = again,
                    None => return,
                }
            }
        });
        Ok(rx)
    }

    async fn put(&self, record: Record) -> Result<()> {
        let mut connection = self.connection.clone();
        let _: i64 = redis::cmd("HSET")
            .arg(&self.records)
            .arg(&record.key)
            .arg(encode(&record))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        let mut connection = self.connection.clone();
        let removed: i64 =
            redis::cmd("HDEL").arg(&self.records).arg(key).query_async(&mut connection).await.map_err(unavailable)?;
        Ok(removed > 0)
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let mut connection = self.connection.clone();
        let fields: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(&self.records).query_async(&mut connection).await.map_err(unavailable)?;
        let now = Utc::now();
        let (mut live, mut expired) = (Vec::new(), Vec::new());
        for (key, field) in fields {
            match decode(key.clone(), &field) {
                Some(record) if record.until > now => live.push(record),
                _ => expired.push(key),
            }
        }
        if !expired.is_empty() {
            let _: i64 = redis::cmd("HDEL")
                .arg(&self.records)
                .arg(&expired)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(live)
    }
}
