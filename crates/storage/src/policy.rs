//! Topic policies: how long, and how much, the log keeps of each group of topics, and which topics keep presence.
//!
//! Policies are listed in order; the first whose patterns match a topic governs it, and topics no policy names
//! fall to the default policy, built from the global retention. Each policy removes its own events on its own
//! schedule and keeps its own "removed through" position: the newest id of its events that retention or a cap
//! removed. A read judges what it lost from the positions of the policies its patterns can reach, and no other.

use std::time::Duration;

use protocol::TopicPattern;
use serde::Deserialize;

use crate::Retention;

/// The most policies one hub takes (the default one included): a set of them is one `u64`.
pub const MAX_POLICIES: usize = 64;

/// One policy: what it governs and what it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPolicy {
    /// As the operator named it, or its patterns joined; `default` for the default policy.
    pub name: String,
    /// The patterns it governs (empty for the default policy, which governs whatever the others do not).
    pub topics: Vec<TopicPattern>,
    /// Events older than this are removed.
    pub max_age: Duration,
    /// The most events of this policy's topics the log keeps, where the backend bounds by count: the policy's
    /// own cap, else the global one.
    pub max_events: usize,
    /// The policy's own cap, which every backend honours (PostgreSQL bounds only such policies by count).
    pub cap: Option<usize>,
    /// The policy sets its own retention or cap (the default policy never does).
    pub own_retention: bool,
    /// Who subscribes to one of its topics is known cluster-wide.
    pub presence: bool,
    /// Names this policy's removal position in a shared backend: its patterns and every earlier policy's, so a
    /// change that could move a topic from one policy to another starts a new position.
    key: String,
}

impl TopicPolicy {
    pub fn is_default(&self) -> bool {
        self.topics.is_empty()
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// A hash of the key (FNV-1a, 64 bits: stable across builds and platforms), in hex: names the policy's stream or
    /// subject where a backend keeps each policy's events apart.
    pub fn key_hash(&self) -> String {
        let hash =
            self.key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("{hash:016x}")
    }
}

/// A set of policies, by index: bit `i` is the `i`-th policy.
pub type PolicySet = u64;

/// The ordered policies of a hub, the default one last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPolicies {
    list: Vec<TopicPolicy>,
}

/// `HUB_TOPIC_POLICIES` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoliciesFile {
    #[serde(default)]
    policy: Vec<PolicySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicySpec {
    name: Option<String>,
    topics: Vec<String>,
    retention: Option<String>,
    max_events: Option<usize>,
    #[serde(default)]
    presence: bool,
}

impl TopicPolicies {
    /// The default policy alone: every topic kept as `retention` says.
    pub fn single(retention: Retention) -> Self {
        Self::build(Vec::new(), retention)
    }

    /// Reads policies from their TOML text (`[[policy]]` tables); `default` is the global retention, which the
    /// default policy keeps and the listed ones start from.
    pub fn from_toml(text: &str, default: Retention) -> Result<Self, String> {
        let file: PoliciesFile = toml::from_str(text).map_err(|e| format!("topic policies: {}", e.message()))?;
        if file.policy.len() >= MAX_POLICIES {
            return Err(format!("topic policies: at most {} policies, got {}", MAX_POLICIES - 1, file.policy.len()));
        }
        let mut listed = Vec::with_capacity(file.policy.len());
        for (n, spec) in file.policy.into_iter().enumerate() {
            let which = spec.name.clone().unwrap_or_else(|| format!("#{}", n + 1));
            let fail = |why: String| format!("topic policy {which}: {why}");
            if spec.topics.is_empty() {
                return Err(fail("`topics` names no pattern".into()));
            }
            let topics = spec
                .topics
                .iter()
                .map(|t| TopicPattern::parse(t.as_str()).map_err(|e| fail(e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            let max_age = match &spec.retention {
                Some(text) => humantime::parse_duration(text).map_err(|e| fail(format!("retention {text:?}: {e}")))?,
                None => default.max_age,
            };
            if max_age.is_zero() {
                return Err(fail("a retention of zero keeps nothing".into()));
            }
            if spec.max_events == Some(0) {
                return Err(fail("`max_events = 0` keeps nothing".into()));
            }
            let name = spec.name.unwrap_or_else(|| spec.topics.join(","));
            if name == "default" {
                return Err(fail("`default` names the policy of the topics no policy lists".into()));
            }
            listed.push(TopicPolicy {
                name,
                topics,
                max_age,
                max_events: spec.max_events.unwrap_or(default.max_events),
                cap: spec.max_events,
                own_retention: spec.retention.is_some() || spec.max_events.is_some(),
                presence: spec.presence,
                key: String::new(),
            });
        }
        let mut names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        if let Some(twice) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("topic policies: two policies are named {:?}", twice[0]));
        }
        Ok(Self::build(listed, default))
    }

    /// Reads `HUB_TOPIC_POLICIES`: the TOML text itself when it holds a `[[policy]]` table, else a file's path.
    pub fn from_setting(value: &str, default: Retention) -> Result<Self, String> {
        if value.contains("[[") {
            return Self::from_toml(value, default);
        }
        let text = std::fs::read_to_string(value).map_err(|e| format!("topic policies: cannot read {value}: {e}"))?;
        Self::from_toml(&text, default)
    }

    fn build(mut listed: Vec<TopicPolicy>, default: Retention) -> Self {
        let mut key = String::new();
        for policy in &mut listed {
            let own: Vec<String> = policy.topics.iter().map(ToString::to_string).collect();
            key.push_str(&own.join(","));
            policy.key = key.clone();
            key.push(';');
        }
        key.push('*');
        listed.push(TopicPolicy {
            name: "default".into(),
            topics: Vec::new(),
            max_age: default.max_age,
            max_events: default.max_events,
            cap: None,
            own_retention: false,
            presence: false,
            key,
        });
        Self { list: listed }
    }

    pub fn iter(&self) -> impl Iterator<Item = &TopicPolicy> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never: the default policy is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn get(&self, index: usize) -> &TopicPolicy {
        &self.list[index]
    }

    /// The index of the policy that governs `topic`.
    pub fn index_of(&self, topic: &str) -> usize {
        self.list.iter().position(|p| p.is_default() || p.topics.iter().any(|q| q.matches(topic))).unwrap_or(0)
    }

    pub fn of(&self, topic: &str) -> &TopicPolicy {
        &self.list[self.index_of(topic)]
    }

    /// Every policy that governs some topic `patterns` match.
    pub fn reached_by(&self, patterns: &[TopicPattern]) -> PolicySet {
        let mut set = 0;
        for pattern in patterns {
            for (i, policy) in self.list.iter().enumerate() {
                if policy.is_default() {
                    set |= 1 << i;
                    break;
                }
                if policy.topics.iter().any(|q| overlaps(pattern, q)) {
                    set |= 1 << i;
                }
                if policy.topics.iter().any(|q| pattern.lies_within(q)) {
                    // Every topic of the pattern stops at this policy: none reaches a later one.
                    break;
                }
            }
        }
        set
    }

    /// The policies of `set`, by index.
    pub fn members(&self, set: PolicySet) -> impl Iterator<Item = usize> + '_ {
        (0..self.list.len()).filter(move |i| set & (1 << i) != 0)
    }

    /// Whether any policy keeps presence.
    pub fn any_presence(&self) -> bool {
        self.list.iter().any(|p| p.presence)
    }
}

/// Whether some topic matches both patterns.
fn overlaps(a: &TopicPattern, b: &TopicPattern) -> bool {
    match (a, b) {
        (TopicPattern::Exact(x), TopicPattern::Exact(y)) => x == y,
        (TopicPattern::Exact(x), TopicPattern::Prefix(p)) | (TopicPattern::Prefix(p), TopicPattern::Exact(x)) => {
            x.as_str().starts_with(p.as_str())
        }
        (TopicPattern::Prefix(p), TopicPattern::Prefix(q)) => p.starts_with(q.as_str()) || q.starts_with(p.as_str()),
    }
}

/// Where each policy's removal stands, by policy index: the newest id of its events that retention or a cap
/// removed (0: none yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removed(pub Vec<u64>);

impl Removed {
    /// Every event of `set`'s policies with an id above the answer is retained.
    pub fn through(&self, set: PolicySet) -> u64 {
        self.0.iter().enumerate().filter(|(i, _)| set & (1 << i) != 0).map(|(_, &r)| r).max().unwrap_or(0)
    }
}

/// What a policy holds, for `/api/health/pubsub` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyState {
    pub name: String,
    /// The oldest retained event of the policy's topics (`None`: none retained).
    pub oldest: Option<u64>,
    /// The newest id of its events that retention or a cap removed (0: none).
    pub removed_through: u64,
    /// How many of its events retention or a cap removed, where the backend counts them (since the hub's start on
    /// the memory backend, since the policy's first use on PostgreSQL).
    pub removed: Option<u64>,
}

impl PolicyState {
    /// A log with one removal position for all its events, which it does not count: everything below `earliest`
    /// is gone.
    pub fn of_one_position(name: &str, bounds: crate::LogBounds) -> Self {
        let oldest = (bounds.earliest <= bounds.head).then_some(bounds.earliest);
        Self { name: name.to_owned(), oldest, removed_through: bounds.earliest - 1, removed: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
        [[policy]]
        topics = ["run.logs", "deploy.logs"]
        retention = "1h"
        max_events = 500000
        [[policy]]
        name = "audit"
        topics = ["audit.*"]
        retention = "30d"
        [[policy]]
        topics = ["chat.*"]
        retention = "7d"
        presence = true
    "#;

    fn policies() -> TopicPolicies {
        TopicPolicies::from_toml(FILE, Retention::default()).unwrap()
    }

    fn patterns(list: &[&str]) -> Vec<TopicPattern> {
        list.iter().map(|p| TopicPattern::parse(*p).unwrap()).collect()
    }

    #[test]
    fn the_first_policy_whose_patterns_match_governs_a_topic_and_the_rest_fall_to_the_default() {
        let p = policies();
        assert_eq!(p.len(), 4);
        assert_eq!(p.of("run.logs").name, "run.logs,deploy.logs");
        assert_eq!(p.of("run.logs").max_age, Duration::from_secs(3600));
        assert_eq!(p.of("run.logs").max_events, 500_000);
        assert_eq!(p.of("audit.login").name, "audit");
        assert_eq!(p.of("audit.login").max_events, Retention::default().max_events);
        assert!(p.of("chat.room1").presence);
        assert_eq!(p.of("run.status").name, "default");
        assert_eq!(p.of("run.status").max_age, Retention::default().max_age);
    }

    #[test]
    fn a_subscription_reaches_the_policies_of_the_topics_its_patterns_can_match() {
        let p = policies();
        assert_eq!(p.reached_by(&patterns(&["audit.*"])), 0b0010, "audit.* stops at its policy");
        assert_eq!(p.reached_by(&patterns(&["audit.x"])), 0b0010);
        assert_eq!(p.reached_by(&patterns(&["run.logs"])), 0b0001);
        assert_eq!(p.reached_by(&patterns(&["run.*"])), 0b1001, "run.logs and other run topics");
        assert_eq!(p.reached_by(&patterns(&["au*"])), 0b1010, "audit.* and audit-free au topics");
        assert_eq!(p.reached_by(&patterns(&["*"])), 0b1111);
        assert_eq!(p.reached_by(&patterns(&["deploy.status", "chat.1"])), 0b1100);
    }

    #[test]
    fn a_change_to_an_earlier_policy_gives_the_later_ones_new_keys() {
        let before = policies();
        let after = TopicPolicies::from_toml(&FILE.replace("\"deploy.logs\"", "\"deploy.*\""), Retention::default());
        let after = after.unwrap();
        assert_ne!(before.get(0).key(), after.get(0).key());
        assert_ne!(before.get(1).key(), after.get(1).key());
        assert_ne!(before.get(3).key(), after.get(3).key());
        let longer = TopicPolicies::from_toml(&FILE.replace("\"30d\"", "\"60d\""), Retention::default()).unwrap();
        assert_eq!(before.get(1).key(), longer.get(1).key(), "a retention change keeps the position");
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        let refuse = |text: &str| TopicPolicies::from_toml(text, Retention::default()).unwrap_err();
        assert!(refuse("[[policy]]\ntopics = []").contains("names no pattern"));
        assert!(refuse("[[policy]]\ntopics = [\"a b\"]").contains("topic"));
        assert!(refuse("[[policy]]\ntopics = [\"a\"]\nretention = \"soon\"").contains("retention \"soon\""));
        assert!(refuse("[[policy]]\ntopics = [\"a\"]\nretention = \"0s\"").contains("keeps nothing"));
        assert!(refuse("[[policy]]\ntopics = [\"a\"]\nmax_events = 0").contains("keeps nothing"));
        assert!(refuse("[[policy]]\ntopics = [\"a\"]\nttl = \"1h\"").contains("unknown field"));
        assert!(
            refuse("[[policy]]\nname = \"x\"\ntopics = [\"a\"]\n[[policy]]\nname = \"x\"\ntopics = [\"b\"]")
                .contains("two policies are named \"x\"")
        );
    }

    #[test]
    fn the_removal_position_of_a_read_is_the_highest_of_the_policies_it_reaches() {
        let removed = Removed(vec![900, 10, 0, 50]);
        assert_eq!(removed.through(0b0010), 10);
        assert_eq!(removed.through(0b1010), 50);
        assert_eq!(removed.through(0b1111), 900);
        assert_eq!(removed.through(0), 0);
    }
}
