//! The HTTP sink: `POST /api/publish` on a hub, for services without database access.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use protocol::{HttpErrorBody, NewEvent, PublishBody};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::publisher::{Published, Sink};
use crate::{Error, Result};

/// How long and how often the HTTP sink retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Give up (with [`Error::Unavailable`]) once this much time has passed since the first attempt.
    pub max_elapsed: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One attempt's time limit.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_elapsed: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Publishes over HTTP. Every event gets an idempotency key (a UUIDv7) before the first attempt, so retrying after
/// a lost answer cannot store it twice: the log answers the first id. Events waiting for the hub are bounded by
/// the buffer; past it a publish fails at once with [`Error::BufferFull`].
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
    retry: RetryPolicy,
    buffer: Arc<Semaphore>,
    capacity: usize,
}

/// Events that may wait for the hub at once, by default.
pub const DEFAULT_BUFFER: usize = 10_000;

impl HttpSink {
    /// Publishes to the hub at `base_url` (`http://hub:8080`).
    pub fn new(base_url: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: format!("{}/api/publish", base_url.trim_end_matches('/')),
            token: None,
            retry: RetryPolicy::default(),
            buffer: Arc::new(Semaphore::new(DEFAULT_BUFFER)),
            capacity: DEFAULT_BUFFER,
        }
    }

    /// Sends `Authorization: Bearer <token>` (a token with a `publish` claim).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Bounds the events waiting for the hub.
    pub fn with_buffer(mut self, capacity: usize) -> Self {
        self.buffer = Arc::new(Semaphore::new(capacity));
        self.capacity = capacity;
        self
    }

    async fn attempt(&self, body: &[u8], traceparent: Option<&str>) -> Attempt {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .timeout(self.retry.request_timeout)
            .body(body.to_vec());
        if let Some(traceparent) = traceparent {
            // The hub's request span joins the publisher's trace.
            request = request.header("traceparent", traceparent);
        }
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Attempt::Retry(e.to_string()),
        };
        let status = response.status().as_u16();
        match status {
            200 => match response.json::<PublishBody>().await {
                Ok(answer) => Attempt::Done(answer),
                // The events are stored but the answer was lost: the retry gets the same ids.
                Err(e) => Attempt::Retry(format!("unreadable answer: {e}")),
            },
            429 | 500..=599 => Attempt::Retry(format!("the hub answered {status}")),
            _ => {
                let (code, message, index) = match response.json::<HttpErrorBody>().await {
                    Ok(body) => (body.error.code.to_string(), body.error.message, body.error.index),
                    Err(_) => ("unknown".to_owned(), format!("the hub answered {status}"), None),
                };
                Attempt::Refused(Error::Rejected { status, code, message, index })
            }
        }
    }
}

enum Attempt {
    Done(PublishBody),
    Retry(String),
    Refused(Error),
}

#[async_trait]
impl Sink for HttpSink {
    async fn send(&self, mut events: Vec<NewEvent>) -> Result<Published> {
        let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let _waiting =
            self.buffer.try_acquire_many(count).map_err(|_| Error::BufferFull { capacity: self.capacity })?;
        for event in &mut events {
            if event.idempotency_key.is_none() {
                event.idempotency_key = Some(uuid::Uuid::now_v7().to_string());
            }
        }
        // Serializing validated events cannot fail.
        let body = serde_json::to_vec(&events).expect("events serialize");
        let traceparent = events.first().and_then(|e| e.traceparent.clone());
        let deadline = Instant::now() + self.retry.max_elapsed;
        let mut backoff = self.retry.initial_backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last = match self.attempt(&body, traceparent.as_deref()).await {
                Attempt::Done(answer) => return Ok(Published { ids: Some(answer.ids) }),
                Attempt::Refused(error) => return Err(error),
                Attempt::Retry(why) => why,
            };
            if Instant::now() + backoff > deadline {
                let message = format!("the hub stayed unreachable for {attempts} attempts; last: {last}");
                return Err(Error::Unavailable(message.into()));
            }
            tracing::debug!(attempts, last, "publish failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
        }
    }
}
