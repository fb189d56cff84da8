//! Property-based fuzzing of every parser that reads client input: client frames, publish bodies, topic patterns,
//! scope filters. Whatever the input, a parser answers (never panics) and a refusal carries a contract error code
//! and a message. Inputs are generated both as random text and as near-valid JSON (valid shapes with wrong or
//! extreme values), which reaches deeper than random bytes. The case count is fixed so CI time is bounded; raise
//! it locally with `PROPTEST_CASES=100000 cargo test -p protocol --test fuzz`.

use proptest::prelude::*;
use protocol::{ClientFrame, ErrorCode, EventLimits, Filter, NewEvent, Profile, Scope, TopicPattern};
use serde_json::{Value, json};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Strings that stress the grammars: the topic alphabet, wildcards, separators, controls, non-ASCII, long runs.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.:*-]{0,140}",
        "[a-z_]{0,40}",
        ".{0,64}",
        Just("*".repeat(3)),
        Just("\u{0}\u{7f}\u{202e}".to_owned()),
        Just("é".repeat(200)),
    ]
}

/// JSON values of any shape, small enough to stay fast, with extreme numbers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Subscribe-like frames: the right field names with values of any kind.
fn frame_like() -> impl Strategy<Value = String> {
    let op = prop_oneof![
        Just(json!("subscribe")),
        Just(json!("unsubscribe")),
        Just(json!("ack")),
        Just(json!("refresh")),
        Just(json!("ping")),
        any_json()
    ];
    (op, any_json(), any_json(), any_json(), any_json(), any_json()).prop_map(
        |(op, sub, topics, filter, since, profile)| {
            json!({"op": op, "sub": sub, "topics": topics, "filter": filter, "since": since, "profile": profile})
                .to_string()
        },
    )
}

fn event_like() -> impl Strategy<Value = Value> {
    (nasty_string(), any_json(), any_json(), any_json(), any_json(), any_json()).prop_map(
        |(topic, scope, key, seq, correlation_id, payload)| {
            json!({"topic": topic, "scope": scope, "key": key, "seq": seq, "correlation_id": correlation_id,
                   "payload": payload})
        },
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn client_frames_never_panic_and_refusals_are_contract_errors(text in prop_oneof![".{0,300}", frame_like()]) {
        if let Err(error) = ClientFrame::parse(&text) {
            prop_assert!(matches!(error.code, ErrorCode::BadRequest | ErrorCode::UnknownOp), "{:?}", error.code);
            prop_assert!(!error.message.is_empty());
        }
    }

    #[test]
    fn publish_bodies_never_panic_and_name_the_bad_event(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            event_like().prop_map(|e| e.to_string().into_bytes()),
            prop::collection::vec(event_like(), 0..5).prop_map(|v| Value::Array(v).to_string().into_bytes()),
        ]
    ) {
        match NewEvent::parse_batch(&body, &EventLimits { max_payload_bytes: 1024 }, 3) {
            Ok(events) => {
                let limits = EventLimits { max_payload_bytes: 1024 };
                prop_assert!(!events.is_empty() && events.len() <= 3);
                for event in &events {
                    let valid = event.validate(&limits).is_ok();
                    prop_assert!(valid, "an accepted event passes validation");
                }
            }
            Err(rejection) => prop_assert!(!rejection.message.is_empty()),
        }
    }

    #[test]
    fn topic_patterns_either_parse_and_match_consistently_or_are_refused(pattern in nasty_string(), topic in nasty_string()) {
        if let Ok(parsed) = TopicPattern::parse(pattern.clone()) {
            let _ = parsed.matches(&topic);
            prop_assert!(parsed.lies_within(&parsed), "a pattern lies within itself: {}", pattern);
            prop_assert!(parsed.lies_within(&TopicPattern::parse("*").unwrap()));
        }
    }

    #[test]
    fn scopes_filters_and_profiles_never_panic(value in any_json(), name in nasty_string()) {
        let _ = serde_json::from_value::<Scope>(value.clone());
        if let (Ok(filter), Ok(scope)) =
            (serde_json::from_value::<Filter>(value.clone()), serde_json::from_value::<Scope>(value))
        {
            prop_assert!(filter.matches(&scope), "a filter matches the scope it equals");
        }
        let _ = Profile::parse(&name);
    }
}
