//! The cluster over PostgreSQL: messages by `NOTIFY realtime_cluster`, records in `realtime_revocations`.

use async_trait::async_trait;
use chrono::Utc;
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::mpsc;
use tracing::debug;

use super::bus::{Cluster, Record, check_size, reopen};
use crate::{Error, Result};

/// The channel hubs say things to each other on.
pub const CLUSTER_CHANNEL: &str = "realtime_cluster";

pub struct PgCluster {
    pool: PgPool,
    url: String,
}

fn unavailable(e: sqlx::Error) -> Error {
    Error::Unavailable(Box::new(e))
}

impl PgCluster {
    /// A pool of one connection of its own (the log's pool serves the log); the migrations, which create the
    /// records' table, are the log's.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = crate::postgres::connect_pool(url, 1, "realtime-hub-cluster").await?;
        Ok(Self { pool, url: url.to_owned() })
    }
}

#[async_trait]
impl Cluster for PgCluster {
    async fn broadcast(&self, message: &str) -> Result<()> {
        check_size(message)?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CLUSTER_CHANNEL)
            .bind(message)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn listen(&self) -> Result<mpsc::UnboundedReceiver<String>> {
        let options = self.url.parse::<sqlx::postgres::PgConnectOptions>().map_err(unavailable)?;
        let options = options.application_name("realtime-hub-cluster-listener");
        let connect = move || {
            let options = options.clone();
            async move {
                // A pool of one of its own: a dropped listener's `UNLISTEN` then holds no slot anyone waits for.
                let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
                let mut listener = PgListener::connect_with(&pool).await?;
                listener.eager_reconnect(false);
                listener.listen(CLUSTER_CHANNEL).await?;
                Ok::<_, sqlx::Error>(listener)
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listener = connect().await.map_err(unavailable)?;
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(notification)) => {
                        if tx.send(notification.payload().to_owned()).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(None) => debug!("the cluster listener's connection was lost; listening again"),
                    Err(e) => debug!(error = %e, "the cluster listener failed; listening again"),
                }
                match reopen(&tx, &connect).await {
                    Some(again) => listener = again,
                    None => return,
                }
            }
        });
        Ok(rx)
    }

    async fn put(&self, record: Record) -> Result<()> {
        sqlx::query(
            "INSERT INTO realtime_revocations (key, value, until) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, until = excluded.until",
        )
        .bind(&record.key)
        .bind(&record.value)
        .bind(record.until)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<bool> {
        let removed = sqlx::query("DELETE FROM realtime_revocations WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(removed.rows_affected() > 0)
    }

    async fn records(&self) -> Result<Vec<Record>> {
        let now = Utc::now();
        sqlx::query("DELETE FROM realtime_revocations WHERE until <= $1")
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        let rows: Vec<(String, String, chrono::DateTime<Utc>)> =
            sqlx::query_as("SELECT key, value, until FROM realtime_revocations WHERE until > $1")
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(rows.into_iter().map(|(key, value, until)| Record { key, value, until }).collect())
    }
}
