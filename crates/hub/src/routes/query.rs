//! The subscription described by query parameters (`topics`, scope keys, `since`, `profile`), shared by every
//! transport.

use std::collections::{BTreeMap, BTreeSet};

use protocol::id::parse_position_str;
use protocol::scope::WELL_KNOWN_KEYS;
use protocol::{Filter, Profile, SubName, Subscribe, TopicPattern};

use crate::auth::Grant;
use crate::error::ApiError;

/// The parameters every route that takes a subscription by query reads, besides scope keys (`last_event_id` is the
/// older systems' name of `since`; `access_token` is read by [`super::token_in_query`]).
/// The parameters only the streaming routes (`/ws`, `/sse`) read: `presence=1` watches who is present.
pub const STREAM_PARAMETERS: [&str; 1] = ["presence"];

pub const SUBSCRIPTION_PARAMETERS: [&str; 6] = ["topics", "since", "last_event_id", "tail", "profile", "access_token"];

/// The long-poll route's own parameters (`GET /api/events`); `/ws` and `/sse` have none of their own.
pub const POLL_PARAMETERS: [&str; 4] = ["after", "before", "limit", "wait"];

/// The scope keys accepted as query parameters: the well-known ones and those configured (`HUB_SCOPE_KEYS`).
pub fn scope_keys(configured: &[String]) -> BTreeSet<String> {
    WELL_KNOWN_KEYS.iter().map(|k| (*k).to_owned()).chain(configured.iter().map(|k| k.trim().to_owned())).collect()
}

/// A subscription given by query parameters, and the other reserved parameters for the route to read.
#[derive(Debug, Default)]
pub struct SubscriptionQuery {
    pub topics: Option<Vec<TopicPattern>>,
    pub filter: BTreeMap<String, String>,
    pub since: Option<u64>,
    /// Start on the last `tail` matching events, then live (never with a resume point).
    pub tail: Option<u32>,
    /// The output profile its events are written in; absent: the token's, else `hub`.
    pub profile: Option<Profile>,
    /// The route's own parameters (`own` in [`parse`](Self::parse)), by name.
    pub other: BTreeMap<String, String>,
}

impl SubscriptionQuery {
    /// Parses a query string for a route whose own parameters are `own`; every other parameter must be one of
    /// [`SUBSCRIPTION_PARAMETERS`] or among `scope_keys`, so a typo, an unknown name or another route's parameter
    /// is refused instead of being ignored or becoming a filter that silently matches nothing.
    pub fn parse(query_string: &str, scope_keys: &BTreeSet<String>, own: &[&str]) -> Result<Self, ApiError> {
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
                // `last_event_id` is the older systems' name of `since`.
                "since" | "last_event_id" => {
                    if query.since.is_some() {
                        return Err(ApiError::bad_request("give the resume point once: since or last_event_id"));
                    }
                    query.since = Some(parse_position_str(&value, &name).map_err(|e| ApiError::bad_request(e.0))?);
                }
                "profile" => {
                    query.profile = Some(Profile::parse(&value).map_err(|e| ApiError::bad_request(e.0))?);
                }
                "tail" => {
                    let tail =
                        value.parse().map_err(|_| ApiError::bad_request(format!("tail: not a count: {value:?}")))?;
                    query.tail = Some(tail);
                }
                "access_token" => {}
                _ if own.contains(&name.as_str()) => {
                    if query.other.insert(name.clone(), value).is_some() {
                        return Err(ApiError::bad_request(format!("{name} is given twice")));
                    }
                }
                _ if scope_keys.contains(&name) => {
                    if query.filter.insert(name.clone(), value).is_some() {
                        return Err(ApiError::bad_request(format!("scope key {name:?} is given twice")));
                    }
                }
                _ => {
                    let keys: Vec<&str> = scope_keys.iter().map(String::as_str).collect();
                    let own = own.iter().map(|p| format!("{p}, ")).collect::<String>();
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {name:?}: expected {own}topics, since (or last_event_id), profile, \
                         access_token, or a scope key ({}; more with HUB_SCOPE_KEYS)",
                        keys.join(", ")
                    )));
                }
            }
        }
        Ok(query)
    }

    /// The resume point: the `Last-Event-ID` header (what reconnecting EventSources send, and any client that can
    /// set headers), else `since` / `last_event_id`.
    pub fn resume_point(&self, req: &actix_web::HttpRequest) -> Result<Option<u64>, ApiError> {
        match req.headers().get("last-event-id") {
            Some(value) => {
                let text = value.to_str().map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?;
                Ok(Some(parse_position_str(text, "Last-Event-ID").map_err(|e| ApiError::bad_request(e.0))?))
            }
            None => Ok(self.since),
        }
    }

    /// Whether the subscription watches presence (`presence=1`).
    pub fn presence(&self) -> Result<bool, ApiError> {
        match self.other.get("presence").map(String::as_str) {
            None | Some("0" | "false") => Ok(false),
            Some("1" | "true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!("presence: 1 or 0, got {other:?}"))),
        }
    }

    /// Whether the query asks for a subscription at all (`topics`, `since`, `tail` or a scope key).
    pub fn asks_for_subscription(&self) -> bool {
        self.topics.is_some() || self.since.is_some() || self.tail.is_some() || !self.filter.is_empty()
    }

    /// The subscription `default` this query describes for a connection with `grant`: `topics` defaulting to
    /// what the token grants (`*` for an unrestricted one), the profile to the token's, starting at `since`, or on
    /// the query's `tail` (a bad request beside a resume point).
    pub fn subscription(&self, since: Option<u64>, grant: &Grant) -> Result<Subscribe, ApiError> {
        let topics = self.topics.clone().unwrap_or_else(|| grant.default_topics());
        let filter = Filter::new(self.filter.clone()).map_err(|e| ApiError::bad_request(e.0))?;
        let subscribe =
            Subscribe::new(SubName::default_name(), topics, filter, since).map_err(|e| ApiError::bad_request(e.0))?;
        let subscribe = subscribe.with_profile(self.profile.unwrap_or_else(|| grant.default_profile()));
        subscribe.with_tail(self.tail).map_err(|e| ApiError::bad_request(e.0))
    }

    /// Whether the request resumes by its `Last-Event-ID` header (a reconnecting EventSource), which wins over
    /// `since` and makes `tail` moot.
    pub fn resumes_by_header(req: &actix_web::HttpRequest) -> bool {
        req.headers().contains_key("last-event-id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> BTreeSet<String> {
        scope_keys(&["color".to_owned()])
    }

    fn parse(query: &str) -> Result<SubscriptionQuery, ApiError> {
        SubscriptionQuery::parse(query, &keys(), &[])
    }

    #[test]
    fn scope_keys_topics_and_since_are_read_from_the_query() {
        let q = parse("topics=run.*,deploy.logs&project_id=abc&env=prod&since=7").unwrap();
        let s = q.subscription(q.since, &Grant::unrestricted()).unwrap();
        assert_eq!(s.topics.len(), 2);
        assert_eq!(s.filter.get("project_id"), Some("abc"));
        assert_eq!(s.filter.get("env"), Some("prod"));
        assert_eq!(s.since, Some(7));
    }

    #[test]
    fn the_output_profile_is_read_from_the_query() {
        let q = parse("project_id=abc&profile=evt-v1").unwrap();
        assert_eq!(q.subscription(None, &Grant::unrestricted()).unwrap().profile, Profile::EvtV1);
        assert_eq!(parse("").unwrap().subscription(None, &Grant::unrestricted()).unwrap().profile, Profile::Hub);
    }

    #[test]
    fn topics_default_to_everything() {
        let q = parse("project_id=abc").unwrap();
        assert!(q.asks_for_subscription());
        assert_eq!(
            q.subscription(None, &Grant::unrestricted()).unwrap().topics,
            vec![TopicPattern::Prefix(String::new())]
        );
        assert!(!parse("").unwrap().asks_for_subscription());
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        assert!(parse("since=-1").is_err());
        assert!(parse("topics=a b").is_err());
        assert!(parse("Project=1").is_err());
        assert!(parse("env=a&env=b").is_err());
        assert!(parse("profile=xml").is_err());
        assert!(parse("last_event_id=4&since=4").is_err(), "one resume point");
    }

    #[test]
    fn only_known_scope_keys_are_filters_and_last_event_id_is_since() {
        assert_eq!(parse("last_event_id=42").unwrap().since, Some(42));
        assert_eq!(parse("color=blue").unwrap().filter.get("color").map(String::as_str), Some("blue"));
        let error = parse("colour=blue").unwrap_err().to_string();
        assert!(error.contains("unknown query parameter \"colour\""), "{error}");
        assert!(error.contains("project_id"), "the known keys are listed: {error}");
    }

    #[test]
    fn a_parameter_of_another_route_is_refused_and_a_route_reads_its_own() {
        for foreign in ["after=1", "limit=5", "wait=0", "sub=s1"] {
            let error = parse(foreign).unwrap_err().to_string();
            assert!(error.contains("unknown query parameter"), "{foreign}: {error}");
        }
        let poll =
            SubscriptionQuery::parse("after=1&limit=5&wait=0&access_token=t", &keys(), &POLL_PARAMETERS).unwrap();
        assert_eq!(poll.other.get("after").map(String::as_str), Some("1"));
        assert_eq!(poll.other.len(), 3, "the token is no route parameter: {:?}", poll.other);
        assert!(SubscriptionQuery::parse("after=1&after=2", &keys(), &POLL_PARAMETERS).is_err());
        assert!(SubscriptionQuery::parse("sub=s1", &keys(), &POLL_PARAMETERS).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, failure_persistence: None, ..Default::default() })]

        /// Fuzzing: any query string is parsed or refused as a `bad_request`, never a panic.
        #[test]
        fn any_query_string_is_parsed_or_refused_as_a_bad_request(
            query in "([a-z_A-Z%=&,.*:0-9-]|%[0-9A-F]{2}){0,200}"
        ) {
            match parse(&query) {
                Ok(q) => {
                    let _ = q.subscription(q.since, &Grant::unrestricted());
                }
                Err(error) => {
                    let text = error.to_string();
                    proptest::prop_assert!(!text.is_empty());
                    proptest::prop_assert_eq!(actix_web::ResponseError::status_code(&error).as_u16(), 400);
                }
            }
        }
    }
}
