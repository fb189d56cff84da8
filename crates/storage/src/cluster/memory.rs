//! The cluster of one process: a channel, and the records in a map.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{broadcast, mpsc};

use super::bus::{Cluster, Record, check_size};
use crate::Result;

pub struct MemoryCluster {
    messages: broadcast::Sender<String>,
    records: Mutex<HashMap<String, Record>>,
}

impl Default for MemoryCluster {
    fn default() -> Self {
        Self { messages: broadcast::channel(1024).0, records: Mutex::default() }
    }
}

#[async_trait]
impl Cluster for MemoryCluster {
    async fn broadcast(&self, message: &str) -> Result<()> {
        check_size(message)?;
        // No receiver yet is no error: nobody listens.
        let _ = self.messages.send(message.to_owned());
        Ok(())
    }

    async fn listen(&self) -> Result<mpsc::UnboundedReceiver<String>> {
        let mut messages = self.messages.subscribe();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        if tx.send(message).is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                    // A listener more than 1,024 messages behind misses some, as on a lost connection.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                }
            }
        });
        Ok(rx)
    }

    async fn put(&self, record: Record) -> Result<()> {
        self.records.lock().unwrap_or_else(|e| e.into_inner()).insert(record.key.clone(), record);
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        Ok(self.records.lock().unwrap_or_else(|e| e.into_inner()).remove(key).is_some())
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let now = Utc::now();
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.retain(|_, r| r.until > now);
        Ok(records.values().cloned().collect())
    }
}
