//! The stream's leader elections, as JetStream announces them (`$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.<stream>`):
//! a request sent while the stream had no leader is never answered, and the one that finds the new leader is sent
//! the moment it is elected instead of after a timeout and a back-off.

use futures_util::StreamExt;
use tokio::sync::watch;

use super::client::unavailable;
use crate::Result;

/// Counts the stream's leader elections as they are announced.
pub(super) struct Elections {
    count: watch::Receiver<u64>,
    follower: tokio::task::JoinHandle<()>,
}

impl Elections {
    pub(super) async fn follow(client: &async_nats::Client, stream: &str) -> Result<Self> {
        let subject = format!("$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{stream}");
        // The client subscribes again by itself after a reconnect.
        let mut advisories = client.subscribe(subject).await.map_err(unavailable)?;
        let (tx, count) = watch::channel(0);
        let follower = tokio::spawn(async move {
            while advisories.next().await.is_some() {
                tx.send_modify(|n| *n += 1);
            }
        });
        Ok(Self { count, follower })
    }

    /// What completes at the next election after this call.
    pub(super) fn watch(&self) -> Election {
        let mut watch = self.count.clone();
        watch.mark_unchanged();
        Election(watch)
    }
}

/// The next election after [`Elections::watch`].
pub(super) struct Election(watch::Receiver<u64>);

impl Election {
    /// Completes when it is announced; never, once the announcements stopped (the client closed).
    pub(super) async fn changed(&mut self) {
        if self.0.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Elections {
    fn drop(&mut self) {
        self.follower.abort();
    }
}
