//! `GET /api/presence?topic=`: who is present on a topic that keeps presence, across every hub of the cluster.
//!
//! Members are the token subjects with a subscription naming that exact topic; connections without a subject are
//! counted (`anonymous`), not listed. The request is authorised as a subscription to the topic is, with scope keys
//! in the query as on `/api/events`.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use protocol::{ErrorCode, Filter, PresenceMember, Topic, TopicPattern};
use serde_json::json;

use crate::cluster::Command;
use crate::error::ApiError;
use crate::routes::access;
use crate::routes::query::SubscriptionQuery;
use crate::state::HubState;

/// The query parameters `GET /api/presence` reads besides scope keys and `access_token`.
pub const PRESENCE_PARAMETERS: [&str; 1] = ["topic"];

pub async fn presence(req: HttpRequest, state: web::Data<HubState>) -> Result<HttpResponse, ApiError> {
    let grant = access::grant(&req, &state).await?;
    let query = SubscriptionQuery::parse(req.query_string(), &state.scope_keys, &PRESENCE_PARAMETERS)?;
    if query.topics.is_some() || query.since.is_some() || query.tail.is_some() || query.profile.is_some() {
        return Err(ApiError::bad_request("/api/presence reads topic, scope keys and access_token only"));
    }
    let topic = query.other.get("topic").ok_or_else(|| ApiError::bad_request("topic is required"))?;
    let topic = Topic::parse(topic.as_str()).map_err(|e| ApiError::bad_request(format!("topic: {e}")))?;
    if !state.policies.of(topic.as_str()).presence {
        return Err(ApiError::bad_request(format!(
            "topic {:?} keeps no presence: its policy (HUB_TOPIC_POLICIES) does not say `presence = true`",
            topic.as_str()
        )));
    }
    let filter = Filter::new(query.filter.clone()).map_err(|e| ApiError::bad_request(e.0))?;
    grant
        .allows_subscription(&[TopicPattern::Exact(topic.clone())], &filter)
        .map_err(|why| ApiError::new(ErrorCode::Forbidden, why))?;

    let outcome = state.cluster.command(Command::Presence { topic: topic.as_str().to_owned() }).await;
    let mut members: BTreeMap<String, PresenceMember> = BTreeMap::new();
    let mut anonymous = 0;
    for member in outcome.presence.into_iter().flat_map(|answer| answer.members) {
        let Some(subject) = member.subject else {
            anonymous += member.connections;
            continue;
        };
        let entry =
            members.entry(subject.clone()).or_insert(PresenceMember { subject, connections: Some(0), info: None });
        entry.connections = Some(entry.connections.unwrap_or(0) + member.connections);
        entry.info = entry.info.take().or(member.info);
    }
    Ok(HttpResponse::Ok().json(json!({
        "topic": topic.as_str(),
        "members": members.into_values().collect::<Vec<_>>(),
        "anonymous": anonymous,
        "hubs": outcome.hubs,
        "missing": outcome.missing,
    })))
}
