//! Topic names and topic patterns.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// The longest topic name or pattern, in characters.
pub const MAX_TOPIC_LEN: usize = 128;

fn is_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// A topic name: 1–128 characters of `[A-Za-z0-9_.:-]` (`run.logs`, `chat:123`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Topic(String);

impl Topic {
    pub fn parse(name: impl Into<String>) -> Result<Self, ValidationError> {
        let name = name.into();
        if name.is_empty() || name.len() > MAX_TOPIC_LEN || !name.chars().all(is_topic_char) {
            return Err(ValidationError::new(format!(
                "topic must be 1-{MAX_TOPIC_LEN} characters of [A-Za-z0-9_.:-], got {name:?}"
            )));
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the topic is the hub's own: under [`RESERVED_PREFIX`] (the audit trail `hub.admin`), where
    /// publishers are refused, except [`SMOKE_TOPIC`], where `hub smoke` publishes its probe.
    pub fn is_reserved(&self) -> bool {
        self.0.starts_with(RESERVED_PREFIX) && self.0 != SMOKE_TOPIC
    }
}

/// Topics the hub keeps for itself (see [`Topic::is_reserved`]).
pub const RESERVED_PREFIX: &str = "hub.";
/// Where the hub's post-deploy check publishes its probe event.
pub const SMOKE_TOPIC: &str = "hub.smoke";
/// Where every change an operator makes is recorded.
pub const ADMIN_TOPIC: &str = "hub.admin";

impl TryFrom<String> for Topic {
    type Error = ValidationError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(name)
    }
}

impl From<Topic> for String {
    fn from(topic: Topic) -> String {
        topic.0
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a subscription or a grant names: an exact topic, or a prefix ending in `*` (`run.*`, `chat:*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TopicPattern {
    Exact(Topic),
    /// Every topic starting with this prefix (which may be empty: `*` matches everything).
    Prefix(String),
}

impl TopicPattern {
    pub fn parse(pattern: impl Into<String>) -> Result<Self, ValidationError> {
        let pattern = pattern.into();
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                if pattern.len() > MAX_TOPIC_LEN || !prefix.chars().all(is_topic_char) {
                    return Err(ValidationError::new(format!(
                        "topic pattern must be a topic, or a prefix of [A-Za-z0-9_.:-] ending in a single '*', \
                         at most {MAX_TOPIC_LEN} characters, got {pattern:?}"
                    )));
                }
                Ok(Self::Prefix(prefix.to_owned()))
            }
            None => Topic::parse(pattern).map(Self::Exact).map_err(|e| {
                ValidationError::new(format!("topic pattern is neither a topic nor a prefix ending in '*': {e}"))
            }),
        }
    }

    /// Whether an event on `topic` belongs to this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Exact(t) => t.as_str() == topic,
            Self::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }

    /// Whether every topic this pattern matches is also matched by `outer` (used for grants and de-duplication).
    pub fn lies_within(&self, outer: &TopicPattern) -> bool {
        match (self, outer) {
            (_, Self::Prefix(o)) => self.fixed_part().starts_with(o.as_str()),
            (Self::Exact(t), Self::Exact(o)) => t == o,
            (Self::Prefix(_), Self::Exact(_)) => false,
        }
    }

    /// The topic of an exact pattern, or the prefix of a prefix pattern.
    pub fn fixed_part(&self) -> &str {
        match self {
            Self::Exact(t) => t.as_str(),
            Self::Prefix(p) => p,
        }
    }

    /// Removes patterns that lie within another one of the list, and duplicates, keeping a stable order.
    pub fn minimize(patterns: &[TopicPattern]) -> Vec<TopicPattern> {
        let mut kept: Vec<TopicPattern> = Vec::with_capacity(patterns.len());
        for (i, p) in patterns.iter().enumerate() {
            // Covered by a strictly wider pattern, or an equal one that came first.
            let covered = patterns.iter().enumerate().any(|(j, q)| if p == q { j < i } else { p.lies_within(q) });
            if !covered {
                kept.push(p.clone());
            }
        }
        kept
    }
}

impl TryFrom<String> for TopicPattern {
    type Error = ValidationError;

    fn try_from(pattern: String) -> Result<Self, Self::Error> {
        Self::parse(pattern)
    }
}

impl From<TopicPattern> for String {
    fn from(pattern: TopicPattern) -> String {
        pattern.to_string()
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(t) => f.write_str(t.as_str()),
            Self::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_under_hub_are_reserved_but_the_smoke_probe_s() {
        assert!(Topic::parse("hub.admin").unwrap().is_reserved());
        assert!(Topic::parse("hub.anything").unwrap().is_reserved());
        assert!(!Topic::parse("hub.smoke").unwrap().is_reserved());
        assert!(!Topic::parse("hubx").unwrap().is_reserved());
        assert!(!Topic::parse("run.logs").unwrap().is_reserved());
    }

    fn pat(s: &str) -> TopicPattern {
        TopicPattern::parse(s).unwrap()
    }

    #[test]
    fn topics_follow_the_alphabet_and_length_rule() {
        for ok in ["run.logs", "chat:123", "audit.feature", "a", "A-Z_0.9:x"] {
            assert!(Topic::parse(ok).is_ok(), "{ok} rejected");
        }
        for bad in ["", "run logs", "run/logs", "émoji", "run.*", &"x".repeat(129)] {
            assert!(Topic::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Topic::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn patterns_are_exact_topics_or_prefixes_with_one_trailing_star() {
        assert_eq!(pat("run.*"), TopicPattern::Prefix("run.".into()));
        assert_eq!(pat("*"), TopicPattern::Prefix(String::new()));
        assert!(matches!(pat("run.logs"), TopicPattern::Exact(_)));
        for bad in ["run.**", "*.logs", "run*.x", "", "a b*"] {
            assert!(TopicPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_patterns_match_topics_that_start_with_the_prefix() {
        assert!(pat("run.*").matches("run.logs"));
        assert!(!pat("run.*").matches("deploy.logs"));
        assert!(pat("*").matches("chat:1"));
        assert!(pat("chat:1").matches("chat:1"));
        assert!(!pat("chat:1").matches("chat:12"));
    }

    #[test]
    fn lies_within_holds_only_when_every_matched_topic_is_covered() {
        assert!(pat("run.logs").lies_within(&pat("run.*")));
        assert!(pat("run.*").lies_within(&pat("*")));
        assert!(pat("run.x*").lies_within(&pat("run.*")));
        assert!(!pat("run.*").lies_within(&pat("run.logs")));
        assert!(!pat("*").lies_within(&pat("run.*")));
        assert!(!pat("deploy.logs").lies_within(&pat("run.*")));
    }

    #[test]
    fn minimize_drops_duplicates_and_covered_patterns() {
        let got = TopicPattern::minimize(&[pat("run.logs"), pat("run.*"), pat("run.*"), pat("chat:1")]);
        assert_eq!(got, vec![pat("run.*"), pat("chat:1")]);
        let got = TopicPattern::minimize(&[pat("a"), pat("*"), pat("b.*")]);
        assert_eq!(got, vec![pat("*")]);
    }
}
