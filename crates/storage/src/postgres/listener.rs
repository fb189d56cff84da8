//! The live feed: `LISTEN` on the log's channels, on a connection of its own that also reads the log for the storage
//! actor.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::PgListener;

use super::read::read_page;
use super::shared::{INBOX_CHANNEL, Shared};
use super::statement::{unavailable, within};
use crate::event::{LogQuery, Page};
use crate::event_log::LiveFeed;
use crate::{Error, Result};

pub(super) struct PgFeed {
    /// Always `Some` until dropped.
    pub(super) listener: Option<PgListener>,
    pub(super) shared: Arc<Shared>,
    /// What the storage actor reads: every event.
    pub(super) all: LogQuery,
    /// Every policy's key: the storage actor's reads reach them all.
    pub(super) keys: Vec<String>,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        let Some(listener) = self.listener.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            return drop(listener);
        }
        // Outside a runtime (at process or test teardown) sqlx's listener cannot hand its connection back and
        // would panic in its destructor: close it on a throwaway runtime instead.
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            runtime.block_on(async move {
                drop(listener);
                tokio::task::yield_now().await;
            });
        }
    }
}

#[async_trait]
impl LiveFeed for PgFeed {
    async fn changed(&mut self, _cursor: u64) -> Result<()> {
        loop {
            // `try_recv` answers `None` when the connection was lost: notifications sent meanwhile are gone, so
            // the caller must read the log again rather than trust a silently reconnected listener.
            let Some(listener) = self.listener.as_mut() else {
                return Err(Error::Unavailable("the listener is closed".into()));
            };
            match listener.try_recv().await {
                Ok(Some(notification)) if notification.channel() == INBOX_CHANNEL => {
                    self.shared.inbox_wake.notify_one()
                }
                Ok(Some(_)) => return Ok(()),
                Ok(None) => return Err(Error::Unavailable("the listening connection was lost".into())),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// Reads the log on the listener's own connection: the storage actor's reads never queue behind the requests
    /// on the pool (under a burst of replays and long-polls, live delivery goes on and `/readyz` stays 200), and
    /// a listener whose connection died without a word is found out by its next read's deadline.
    async fn read(&mut self, after: u64, limit: usize) -> Result<Option<Page>> {
        let Some(listener) = self.listener.as_mut() else {
            return Err(Error::Unavailable("the listener is closed".into()));
        };
        let page = within(self.shared.db.timeout, read_page(listener, after, &self.all, &self.keys, limit)).await;
        if let Err(e) = &page {
            self.shared.db.went_silent(e);
        }
        page.map(Some)
    }
}
