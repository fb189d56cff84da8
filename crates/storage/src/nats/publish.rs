//! Publishing a request's events: one event with a plain JetStream publish, several as one atomic batch (NATS
//! 2.12): stored together, contiguous and in request order, on every replica, or not at all.
//!
//! Every event carries a `Nats-Msg-Id` (its idempotency key, else one of the hub's), so a publish retried after a
//! lost acknowledgement or a leader election is stored once. A single event stored before is answered with its
//! first sequence by JetStream itself. A batch holding a key stored before is refused whole (`10201`); each of its
//! events is then asked for with a probe JetStream answers without storing anything (the key, and an expected last
//! message id no stream has: a stored key is answered with its sequence, any other is refused), and the events not
//! stored go again as a new batch.

use async_nats::HeaderMap;
use async_nats::connection::State;
use async_nats::jetstream::{self, context::PublishErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;

/// The most events one atomic batch holds (JetStream's own limit).
pub const MAX_ATOMIC_BATCH: usize = 1000;
/// JetStream refuses an atomic batch holding a message id it stored before.
const BATCH_HOLDS_A_DUPLICATE: u64 = 10201;
/// JetStream refuses a publish whose expected last message id is not the stream's.
const WRONG_LAST_MESSAGE_ID: u64 = 10070;
/// Probes in flight at once.
const PROBES_IN_FLIGHT: usize = 32;
/// How long one attempt waits for JetStream's answer before it is sent again (with the same message ids, so it is
/// stored once): a stream whose leader died answers nothing until a new one is elected, and the retry that finds
/// the new leader should not wait out a long timeout first.
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(750);

/// One event as it is published.
pub(super) struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl Outgoing {
    fn key(&self) -> &str {
        self.headers.get("Nats-Msg-Id").map_or("", |v| v.as_str())
    }
}

/// Whether a failure means no stream takes the subject (the stream was deleted).
pub(super) fn no_stream(e: &async_nats::Error) -> bool {
    e.downcast_ref::<jetstream::context::PublishError>().is_some_and(|e| e.kind() == PublishErrorKind::StreamNotFound)
        || e.downcast_ref::<async_nats::RequestError>()
            .is_some_and(|e| e.kind() == async_nats::RequestErrorKind::NoResponders)
}

/// One attempt to store every event whose id is still `None` (at most [`MAX_ATOMIC_BATCH`]); fills in the ids of
/// those it stored, or found stored before.
pub(super) async fn attempt(
    client: &async_nats::Client,
    js: &jetstream::Context,
    events: &[Outgoing],
    ids: &mut [Option<u64>],
) -> Result<(), async_nats::Error> {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt_once(client, js, events, ids)).await {
        Ok(done) => done,
        Err(_) => Err("JetStream did not answer in time (a leader election?)".into()),
    }
}

async fn attempt_once(
    client: &async_nats::Client,
    js: &jetstream::Context,
    events: &[Outgoing],
    ids: &mut [Option<u64>],
) -> Result<(), async_nats::Error> {
    // The client queues what is published while it is disconnected and sends it after a reconnect, possibly after
    // this request was answered 503: publish only on a live connection.
    if client.connection_state() != State::Connected {
        return Err("not connected to NATS".into());
    }
    let pending: Vec<usize> = (0..events.len()).filter(|i| ids[*i].is_none()).collect();
    if let [only] = pending[..] {
        let event = &events[only];
        let ack = js.publish_with_headers(event.subject.clone(), event.headers.clone(), event.payload.clone()).await?;
        ids[only] = Some(ack.await?.sequence);
        return Ok(());
    }
    let batch: Vec<&Outgoing> = pending.iter().map(|i| &events[*i]).collect();
    match commit(client, &batch).await? {
        Some(stored) => {
            for (i, id) in pending.iter().zip(stored) {
                ids[*i] = Some(id);
            }
            Ok(())
        }
        None => {
            let found = stored_before(client, &batch).await?;
            let mut any = false;
            for (i, id) in pending.iter().zip(found) {
                any |= id.is_some();
                ids[*i] = ids[*i].or(id);
            }
            if any {
                return Ok(());
            }
            Err("JetStream refused the batch as holding an event stored before, and found none stored".into())
        }
    }
}

/// Publishes `batch` as one atomic batch; its ids, or `None` when JetStream refused it as holding a key it stored
/// before.
async fn commit(client: &async_nats::Client, batch: &[&Outgoing]) -> Result<Option<Vec<u64>>, async_nats::Error> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let last = batch.len() - 1;
    for (n, event) in batch.iter().enumerate() {
        let mut headers = event.headers.clone();
        headers.insert("Nats-Batch-Id", id.as_str());
        headers.insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
        if n < last {
            client.publish_with_headers(event.subject.clone(), headers, event.payload.clone()).await?;
            continue;
        }
        headers.insert("Nats-Batch-Commit", "1");
        let answer = client.request_with_headers(event.subject.clone(), headers, event.payload.clone()).await?;
        let ack: serde_json::Value = serde_json::from_slice(&answer.payload)?;
        if let Some(error) = ack.get("error") {
            if error["err_code"].as_u64() == Some(BATCH_HOLDS_A_DUPLICATE) {
                return Ok(None);
            }
            return Err(format!("JetStream refused the batch: {error}").into());
        }
        let count = batch.len() as u64;
        return match (ack["seq"].as_u64(), ack["count"].as_u64()) {
            (Some(last), Some(stored)) if stored == count && last >= count => {
                Ok(Some((last - count + 1..=last).collect()))
            }
            _ => Err(format!("JetStream answered the batch with {ack}").into()),
        };
    }
    unreachable!("a batch has at least two events")
}

/// The sequence each event of `batch` was stored at before, if it was (see the module's docs).
async fn stored_before(
    client: &async_nats::Client,
    batch: &[&Outgoing],
) -> Result<Vec<Option<u64>>, async_nats::Error> {
    let never = format!("hub-probe-{}", uuid::Uuid::new_v4().simple());
    let probes: Vec<(String, HeaderMap)> = batch
        .iter()
        .map(|event| {
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", event.key());
            headers.insert("Nats-Expected-Last-Msg-Id", never.as_str());
            (event.subject.clone(), headers)
        })
        .collect();
    let answers: Vec<_> = futures_util::stream::iter(probes)
        .map(|(subject, headers)| client.request_with_headers(subject, headers, Bytes::new()))
        .buffered(PROBES_IN_FLIGHT)
        .collect()
        .await;
    let mut found = Vec::with_capacity(batch.len());
    for answer in answers {
        let ack: serde_json::Value = serde_json::from_slice(&answer?.payload)?;
        match (ack["duplicate"].as_bool(), ack["error"]["err_code"].as_u64()) {
            (Some(true), _) => found.push(ack["seq"].as_u64()),
            (_, Some(WRONG_LAST_MESSAGE_ID)) => found.push(None),
            _ => return Err(format!("JetStream answered a probe with {ack}").into()),
        }
    }
    Ok(found)
}
