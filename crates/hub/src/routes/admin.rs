//! `/api/admin/*`: the cluster's open connections, and cutting them: disconnect, revoke, lift a revocation.
//!
//! Only tokens with `"admin": true` (and development mode) may call these; any other token gets 403 with the
//! reason. Every change (not a listing) is recorded as an event on `hub.admin`: who, what, when, and what it
//! touched, so the audit trail is the log.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use protocol::topic::ADMIN_TOPIC;
use protocol::{ErrorCode, NewEvent, Scope, Topic, TopicPattern};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Grant, Revocation, Revoked};
use crate::cluster::{Command, Outcome};
use crate::error::ApiError;
use crate::fanout::sessions::Cut;
use crate::routes::access;
use crate::state::HubState;

/// The query parameters `GET /api/admin/connections` reads (besides `access_token`).
pub const CONNECTIONS_PARAMETERS: [&str; 3] = ["subject", "topic", "node"];

/// The request's grant, if it may administer the hub: 401 without a valid token, 403 without the claim.
async fn admin(req: &HttpRequest, state: &HubState) -> Result<Grant, ApiError> {
    let grant = access::grant(req, state).await?;
    if !grant.is_admin() {
        return Err(ApiError::new(ErrorCode::Forbidden, "/api/admin/* needs a token with \"admin\": true"));
    }
    Ok(grant)
}

/// `GET /api/admin/connections?subject=&topic=&node=`: every open WebSocket and SSE connection of the cluster.
pub async fn connections(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    admin(&req, &state).await?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| ApiError::bad_request(format!("the query string is malformed: {e}")))?
        .into_inner();
    let (mut subject, mut topic, mut node) = (None, None, None);
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "subject" => &mut subject,
            "topic" => &mut topic,
            "node" => &mut node,
            "access_token" => continue,
            _ => {
                let expected = CONNECTIONS_PARAMETERS.join(", ");
                return Err(ApiError::bad_request(format!("unknown query parameter {name:?}: expected {expected}")));
            }
        };
        *slot = Some(value);
    }
    let topic = topic.map(Topic::parse).transpose().map_err(|e| ApiError::bad_request(format!("topic: {e}")))?;
    let outcome = state.cluster.command(Command::List).await;
    let mut connections: Vec<_> = outcome
        .connections
        .iter()
        .filter(|c| subject.as_ref().is_none_or(|s| c.subject.as_ref() == Some(s)))
        .filter(|c| node.as_ref().is_none_or(|n| c.node == *n))
        .filter(|c| {
            topic.as_ref().is_none_or(|t| {
                c.subscriptions.iter().any(|s| {
                    s.topics.iter().any(|p| TopicPattern::parse(p.as_str()).is_ok_and(|p| p.matches(t.as_str())))
                })
            })
        })
        .collect();
    connections.sort_by(|a, b| (&a.node, &a.since, &a.id).cmp(&(&b.node, &b.since, &b.id)));
    Ok(HttpResponse::Ok().json(json!({
        "connections": connections,
        "hubs": outcome.hubs,
        "missing": outcome.missing,
    })))
}

/// What `disconnect` and `revoke` name: a subject, or a connection (disconnect) or token id (revoke).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    subject: Option<String>,
    connection: Option<String>,
    jti: Option<String>,
    /// For `revoke`: when it lapses (RFC 3339); default `HUB_REVOCATION_TTL` from now.
    until: Option<chrono::DateTime<Utc>>,
}

fn target(body: &[u8]) -> Result<Target, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the body is not a target: {e}")))
}

/// `POST /api/admin/disconnect` with `{"subject":…}` or `{"connection":…}`: closes the matching connections on
/// every hub (WebSocket 4002; SSE a disconnect notice, then the end; a waiting long-poll is answered at once).
pub async fn disconnect(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<HubState>,
) -> Result<HttpResponse, ApiError> {
    let grant = admin(&req, &state).await?;
    let cut = match target(&body)? {
        Target { subject: Some(subject), connection: None, jti: None, until: None } => Cut::Subject(subject),
        Target { subject: None, connection: Some(connection), jti: None, until: None } => Cut::Connection(connection),
        _ => return Err(ApiError::bad_request("give exactly one of subject or connection")),
    };
    let outcome = state.cluster.command(Command::Cut { cut: cut.clone() }).await;
    record(&state, &grant, "disconnect", json!(cut), &outcome).await?;
    Ok(HttpResponse::Ok().json(answer(&outcome)))
}

/// `POST /api/admin/revoke` with `{"subject":…}` or `{"jti":…}` (and `until`): every hub refuses the tokens it
/// covers from now on (a subject's tokens issued at or before now) and closes their connections with 4003.
pub async fn revoke(req: HttpRequest, body: web::Bytes, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let grant = admin(&req, &state).await?;
    let target = target(&body)?;
    let now = Utc::now();
    let until = target.until.unwrap_or_else(|| now + state.settings.revocation_ttl);
    if until <= now {
        return Err(ApiError::bad_request("until is not in the future"));
    }
    let revoked = revoked(target, now.timestamp() as u64)?;
    let revocation = Revocation { revoked, until: until.timestamp() as u64 };
    let outcome = state.cluster.revoke(revocation.clone()).await?;
    record(&state, &grant, "revoke", json!(revocation), &outcome).await?;
    let mut body = answer(&outcome);
    body["revocation"] = json!(revocation);
    Ok(HttpResponse::Ok().json(body))
}

/// `DELETE /api/admin/revoke` with `{"subject":…}` or `{"jti":…}`: lifts the revocation on every hub.
pub async fn lift(req: HttpRequest, body: web::Bytes, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let grant = admin(&req, &state).await?;
    let target = target(&body)?;
    if target.until.is_some() {
        return Err(ApiError::bad_request("until is for revoking, not for lifting"));
    }
    let key = Revocation { revoked: revoked(target, 0)?, until: 0 }.key();
    let (lifted, outcome) = state.cluster.lift(&key).await?;
    if !lifted {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no revocation of {key}")));
    }
    record(&state, &grant, "lift", json!({"key": key}), &outcome).await?;
    Ok(HttpResponse::Ok().json(answer(&outcome)))
}

/// `GET /api/admin/revocations`: the revocations in force.
pub async fn revocations(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    admin(&req, &state).await?;
    Ok(HttpResponse::Ok().json(json!({"revocations": state.cluster.revocations()})))
}

fn revoked(target: Target, issued_before: u64) -> Result<Revoked, ApiError> {
    match target {
        Target { subject: Some(subject), jti: None, connection: None, .. } => {
            Ok(Revoked::Subject { subject, issued_before })
        }
        Target { subject: None, jti: Some(jti), connection: None, .. } => Ok(Revoked::Token { jti }),
        _ => Err(ApiError::bad_request("give exactly one of subject or jti")),
    }
}

fn answer(outcome: &Outcome) -> Value {
    json!({
        "closed": outcome.closed,
        "polls": outcome.polls,
        "hubs": outcome.hubs,
        "missing": outcome.missing,
    })
}

/// Records an operator's change on `hub.admin`: who (the token's subject), what, when, and what it touched.
async fn record(
    state: &HubState,
    grant: &Grant,
    action: &str,
    target: Value,
    outcome: &Outcome,
) -> Result<(), ApiError> {
    let mut payload = Map::new();
    payload.insert("action".into(), json!(action));
    payload.insert("by".into(), json!(grant.subject()));
    payload.insert("target".into(), target);
    payload.insert("at".into(), json!(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)));
    payload.insert("connections".into(), json!(outcome.closed));
    payload.insert("polls".into(), json!(outcome.polls));
    payload.insert("hubs".into(), json!(outcome.hubs));
    payload.insert("missing".into(), json!(outcome.missing));
    metrics::counter!("hub_admin_actions_total", "action" => action.to_owned()).increment(1);
    let topic = Topic::parse(ADMIN_TOPIC).expect("the admin topic is a topic");
    state.log.append(vec![NewEvent::new(topic, Scope::default(), payload)]).await?;
    crate::telemetry::instruments::published(1);
    Ok(())
}
