//! The subscription described by query parameters (`topics`, scope keys, `since`, `profile`), shared by every
//! transport.

use std::collections::BTreeMap;

use protocol::id::parse_position_str;
use protocol::scope::is_scope_key;
use protocol::{Filter, Profile, SubName, Subscribe, TopicPattern};

use crate::auth::Grant;
use crate::error::ApiError;

/// Query parameters that are not scope keys.
const RESERVED: [&str; 7] = ["topics", "since", "access_token", "after", "limit", "wait", "sub"];

/// A subscription given by query parameters, and the other reserved parameters for the route to read.
#[derive(Debug, Default)]
pub struct SubscriptionQuery {
    pub topics: Option<Vec<TopicPattern>>,
    pub filter: BTreeMap<String, String>,
    pub since: Option<u64>,
    /// The output profile its events are written in; absent: the token's, else `hub`.
    pub profile: Option<Profile>,
    /// Reserved parameters other than `topics`, `since` and `profile`, by name.
    pub other: BTreeMap<String, String>,
}

impl SubscriptionQuery {
    pub fn parse(query_string: &str) -> Result<Self, ApiError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query_string)
            .map_err(|e| ApiError::bad_request(format!("the query string is malformed: {e}")))?
            .into_inner();
        let mut query = Self::default();
        for (name, value) in pairs {
            match name.as_str() {
                "topics" => {
                    let topics = value
                        .split(',')
                        .map(|t| TopicPattern::parse(t.trim()))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| ApiError::bad_request(format!("topics: {e}")))?;
                    query.topics = Some(topics);
                }
                "since" => {
                    query.since = Some(parse_position_str(&value, "since").map_err(|e| ApiError::bad_request(e.0))?);
                }
                "profile" => {
                    query.profile = Some(Profile::parse(&value).map_err(|e| ApiError::bad_request(e.0))?);
                }
                _ if RESERVED.contains(&name.as_str()) => {
                    query.other.insert(name, value);
                }
                _ if is_scope_key(&name) => {
                    if query.filter.insert(name.clone(), value).is_some() {
                        return Err(ApiError::bad_request(format!("scope key {name:?} is given twice")));
                    }
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {name:?}: expected topics, since, profile, access_token or a scope key of [a-z_]"
                    )));
                }
            }
        }
        Ok(query)
    }

    /// Whether the query asks for a subscription at all (`topics`, `since` or a scope key).
    pub fn asks_for_subscription(&self) -> bool {
        self.topics.is_some() || self.since.is_some() || !self.filter.is_empty()
    }

    /// The subscription `default` this query describes for a connection with `grant`: `topics` defaulting to
    /// what the token grants (`*` for an unrestricted one), the profile to the token's.
    pub fn subscription(&self, since: Option<u64>, grant: &Grant) -> Result<Subscribe, ApiError> {
        let topics = self.topics.clone().unwrap_or_else(|| grant.default_topics());
        let filter = Filter::new(self.filter.clone()).map_err(|e| ApiError::bad_request(e.0))?;
        let subscribe =
            Subscribe::new(SubName::default_name(), topics, filter, since).map_err(|e| ApiError::bad_request(e.0))?;
        Ok(subscribe.with_profile(self.profile.unwrap_or_else(|| grant.default_profile())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_topics_and_since_are_read_from_the_query() {
        let q = SubscriptionQuery::parse("topics=run.*,deploy.logs&project_id=abc&env=prod&since=7").unwrap();
        let s = q.subscription(q.since, &Grant::unrestricted()).unwrap();
        assert_eq!(s.topics.len(), 2);
        assert_eq!(s.filter.get("project_id"), Some("abc"));
        assert_eq!(s.filter.get("env"), Some("prod"));
        assert_eq!(s.since, Some(7));
    }

    #[test]
    fn the_output_profile_is_read_from_the_query() {
        let q = SubscriptionQuery::parse("project_id=abc&profile=evt-v1").unwrap();
        assert_eq!(q.subscription(None, &Grant::unrestricted()).unwrap().profile, Profile::EvtV1);
        assert_eq!(
            SubscriptionQuery::parse("").unwrap().subscription(None, &Grant::unrestricted()).unwrap().profile,
            Profile::Hub
        );
    }

    #[test]
    fn topics_default_to_everything() {
        let q = SubscriptionQuery::parse("project_id=abc").unwrap();
        assert!(q.asks_for_subscription());
        assert_eq!(
            q.subscription(None, &Grant::unrestricted()).unwrap().topics,
            vec![TopicPattern::Prefix(String::new())]
        );
        assert!(!SubscriptionQuery::parse("").unwrap().asks_for_subscription());
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        assert!(SubscriptionQuery::parse("since=-1").is_err());
        assert!(SubscriptionQuery::parse("topics=a b").is_err());
        assert!(SubscriptionQuery::parse("Project=1").is_err());
        assert!(SubscriptionQuery::parse("env=a&env=b").is_err());
        assert!(SubscriptionQuery::parse("profile=xml").is_err());
    }
}
