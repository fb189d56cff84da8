//! `GET /api/events`: the long-poll fallback.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use protocol::id::parse_position_str;
use protocol::{ErrorCode, Profile, ResetInfo};
use storage::{LogQuery, Page};

use crate::error::ApiError;
use crate::routes::access;
use crate::routes::query::{POLL_PARAMETERS, SubscriptionQuery};
use crate::state::HubState;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
const DEFAULT_WAIT_S: u64 = 25;
const MAX_WAIT_S: u64 = 30;

fn number(
    query: &SubscriptionQuery,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(raw) = query.other.get(name) else { return Ok(default) };
    match raw.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "{name} must be an integer from {} to {}, got {raw:?}",
            range.start(),
            range.end()
        ))),
    }
}

#[tracing::instrument(name = "long_poll", skip_all)]
pub async fn events(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let grant = access::grant(&req, &state).await?;
    let mut query = SubscriptionQuery::parse(req.query_string(), &state.scope_keys, &POLL_PARAMETERS)?;
    // `after`, or the names the other transports use for the same position; or instead of a position, the last
    // `tail` events, or the `limit` newest below `before` (scrollback).
    let position = match query.other.get("after") {
        Some(raw) => Some(parse_position_str(raw, "after").map_err(|e| ApiError::bad_request(e.0))?),
        None => query.resume_point(&req)?,
    };
    let before = query.other.get("before").map(|raw| parse_position_str(raw, "before")).transpose();
    let before = before.map_err(|e| ApiError::bad_request(e.0))?;
    let tail = query.tail.take();
    match (position, before, tail) {
        (Some(_), None, None) => {}
        (None, Some(0), None) => return Err(ApiError::bad_request("before must be an event id, 1 or more")),
        (None, Some(before), None) => return backwards(&state, &query, &grant, Start::Before(before)).await,
        (None, None, Some(tail)) => {
            if query.other.contains_key("limit") {
                return Err(ApiError::bad_request("tail gives the count: leave limit out"));
            }
            return backwards(&state, &query, &grant, Start::Tail(tail)).await;
        }
        (None, None, None) => {
            return Err(ApiError::bad_request("after is required (0 for all retained events), or tail, or before"));
        }
        _ => return Err(ApiError::bad_request("give one of after (or since, last_event_id), tail and before")),
    }
    let after = position.expect("checked above");
    let limit = number(&query, "limit", DEFAULT_LIMIT as u64, 1..=MAX_LIMIT as u64)? as usize;
    let wait = Duration::from_secs(number(&query, "wait", DEFAULT_WAIT_S, 0..=MAX_WAIT_S)?);
    let subscription = query.subscription(Some(after), &grant)?;
    grant
        .allows_subscription(&subscription.topics, &subscription.filter)
        .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;

    let profile = subscription.profile;
    let log_query = LogQuery::new(subscription.topics.clone(), subscription.filter.clone());
    // A position the window of newest events covers is answered from it once it holds what this hub appended:
    // nothing there is truncated.
    let recent = match state.log.recent() {
        Some(recent) if recent.caught_up().await => Some(recent),
        _ => None,
    };
    let page = match recent.and_then(|recent| recent.read_after(after, &log_query, limit)) {
        Some(page) => page,
        None => {
            let bounds = state.log.bounds(&log_query).await?;
            if bounds.truncates(after) {
                return Ok(reset(bounds.reset(), bounds.head));
            }
            state.log.read_after(after, &log_query, limit).await?
        }
    };
    if !page.events.is_empty() || page.bounds.truncates(after) || wait.is_zero() || state.shutting_down() {
        return Ok(finish(&page, after, profile));
    }

    // Nothing yet: wait on the subscription shared by every request waiting on the same topics and filter, read
    // once more (an event may have come before the wait took effect), and again after each wake-up, until an
    // event matches or `wait` ends.
    let _permit = state
        .poll_waiters
        .acquire()
        .ok_or_else(|| ApiError::new(ErrorCode::LimitExceeded, "too many long-poll requests are waiting"))?;
    let waiting = state
        .poll_wakes
        .wait_on(&subscription.topics, &subscription.filter)
        .await
        .ok_or_else(|| ApiError::new(ErrorCode::Internal, "the dispatcher stopped"))?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.shutdown.clone();
    // An operator's disconnect or revocation that covers this request answers it at once.
    let registered = state.sessions.wait_poll(&grant);
    // Everything up to `read` has been read and none of it matched. Each page is judged from where it was read:
    // a later page may come from the window of newest events, which starts wherever this hub began to follow the
    // log, and that is no loss.
    let mut read = page.through;
    let (page, read) = loop {
        let woken = waiting.notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let page = state.log.read_after(read, &log_query, limit).await?;
        if !page.events.is_empty() || page.bounds.truncates(read) || state.shutting_down() {
            break (page, read);
        }
        let from = std::mem::replace(&mut read, page.through);
        // A hub shutting down answers at once: the client asks another.
        tokio::select! {
            _ = woken => {}
            _ = tokio::time::sleep_until(deadline) => break (page, from),
            _ = shutdown.wait_for(|stopping| *stopping) => break (page, from),
            _ = registered.cut.notified() => break (page, from),
        }
    };
    drop((waiting, registered));
    Ok(finish(&page, read, profile))
}

/// Where a long-poll that gives no position starts.
#[derive(Clone, Copy)]
enum Start {
    /// The last `n` matching events (then `next_after` is the head: ask again from there for what comes).
    Tail(u32),
    /// The `limit` newest matching events below this id, for scrollback.
    Before(u64),
}

/// `tail=N` or `before=<id>&limit=N`: the newest matching events, read backwards, answered at once in id order
/// (`storage::tail` bounds the work).
async fn backwards(
    state: &HubState,
    query: &SubscriptionQuery,
    grant: &crate::auth::Grant,
    start: Start,
) -> Result<HttpResponse, ApiError> {
    let limit = number(query, "limit", DEFAULT_LIMIT as u64, 1..=MAX_LIMIT as u64)? as usize;
    if query.other.contains_key("wait") {
        return Err(ApiError::bad_request("tail and before are answered at once: leave wait out"));
    }
    let subscription = query.subscription(None, grant)?;
    grant
        .allows_subscription(&subscription.topics, &subscription.filter)
        .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;
    let log_query = LogQuery::new(subscription.topics.clone(), subscription.filter.clone());
    let (before, count) = match start {
        Start::Tail(n) => {
            if !(1..=protocol::client_frame::MAX_TAIL).contains(&n) {
                let max = protocol::client_frame::MAX_TAIL;
                return Err(ApiError::bad_request(format!("tail must be 1 to {max}, got {n}")));
            }
            (u64::MAX, n as usize)
        }
        Start::Before(before) => (before, limit),
    };
    let tail = storage::tail::read_before(&*state.log, before, &log_query, count).await?;
    let next_after = match start {
        Start::Tail(_) => tail.head,
        Start::Before(before) => tail.events.last().map_or(before - 1, |e| e.id()),
    };
    let page = Page { events: tail.events, through: next_after, ..Page::default() };
    Ok(answer(&page, None, subscription.profile))
}

/// The answer of `page`, read after `read`: its events, or the reset when retention or a new log epoch overtook
/// `read` since the bounds were read.
fn finish(page: &Page, read: u64, profile: Profile) -> HttpResponse {
    if page.bounds.truncates(read) {
        return reset(page.bounds.reset(), page.bounds.earliest - 1);
    }
    answer(page, None, profile)
}

/// The answer to a position whose events are gone: no events, the reset, and where to go on from.
fn reset(info: ResetInfo, next_after: u64) -> HttpResponse {
    crate::telemetry::instruments::resets(1);
    answer(&Page { through: next_after, ..Page::default() }, Some(info), Profile::Hub)
}

/// `{"events":[…],"next_after":N,"reset":…}`, with each event written in `profile` (the hub profile writes the
/// envelope's stored JSON as is).
fn answer(page: &Page, reset: Option<ResetInfo>, profile: Profile) -> HttpResponse {
    let mut body = String::with_capacity(64 + page.events.iter().map(|e| e.json().len() + 1).sum::<usize>());
    body.push_str(r#"{"events":["#);
    for (i, event) in page.events.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        match profile {
            Profile::Hub => body.push_str(event.json()),
            other => body.push_str(&other.render(&event.envelope, event.json())),
        }
    }
    body.push_str(r#"],"next_after":"#);
    body.push_str(&page.through.to_string());
    body.push_str(r#","reset":"#);
    body.push_str(&serde_json::to_string(&reset).expect("a reset always serializes"));
    body.push('}');
    HttpResponse::Ok().content_type("application/json").body(body)
}
