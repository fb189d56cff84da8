//! Scopes carried by events and the filters subscriptions match them with.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::ValidationError;

/// The most keys a scope or a filter may have.
pub const MAX_SCOPE_KEYS: usize = 16;
/// The longest scope key, in characters of `[a-z_]`.
pub const MAX_SCOPE_KEY_LEN: usize = 32;
/// The longest scope value, in characters.
pub const MAX_SCOPE_VALUE_LEN: usize = 256;

/// Scope keys the log knows by name (they get their own columns and routing indexes).
pub const WELL_KNOWN_KEYS: [&str; 6] = ["org_id", "project_id", "env", "run_id", "task_id", "deploy_id"];

/// Whether `key` is a valid scope key: 1–32 characters of `[a-z_]`.
pub fn is_scope_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_SCOPE_KEY_LEN && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn validate_map(map: &BTreeMap<String, String>, what: &str) -> Result<(), ValidationError> {
    if map.len() > MAX_SCOPE_KEYS {
        return Err(ValidationError::new(format!(
            "{what} has {} keys, at most {MAX_SCOPE_KEYS} are allowed",
            map.len()
        )));
    }
    for (key, value) in map {
        if !is_scope_key(key) {
            return Err(ValidationError::new(format!(
                "{what} key {key:?} must be 1-{MAX_SCOPE_KEY_LEN} characters of [a-z_]"
            )));
        }
        if value.chars().count() > MAX_SCOPE_VALUE_LEN {
            return Err(ValidationError::new(format!(
                "{what} value of {key:?} is longer than {MAX_SCOPE_VALUE_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// Where an event belongs: string keys to string values (`{"project_id":"p1","run_id":"r9"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct Scope(BTreeMap<String, String>);

/// Written as its map, borrowed: `serde(into)` would clone the map for every event serialized.
impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Scope {
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        validate_map(&map, "scope")?;
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<BTreeMap<String, String>> for Scope {
    type Error = ValidationError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::new(map)
    }
}

impl From<Scope> for BTreeMap<String, String> {
    fn from(scope: Scope) -> Self {
        scope.0
    }
}

impl<const N: usize> TryFrom<[(&str, &str); N]> for Scope {
    type Error = ValidationError;

    fn try_from(pairs: [(&str, &str); N]) -> Result<Self, Self::Error> {
        Self::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

/// A subscription's filter: an event matches when every pair equals the event's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "BTreeMap<String, String>")]
pub struct Filter(BTreeMap<String, String>);

impl Serialize for Filter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Filter {
    pub fn new(map: BTreeMap<String, String>) -> Result<Self, ValidationError> {
        validate_map(&map, "filter")?;
        Ok(Self(map))
    }

    /// Whether every pair of the filter is in `scope`.
    pub fn matches(&self, scope: &Scope) -> bool {
        self.0.iter().all(|(k, v)| scope.get(k) == Some(v.as_str()))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The pair a router should index this filter under: the most selective well-known key it pins
    /// (`run_id` before `project_id` before `env` …), else its first key; `None` for an empty filter.
    ///
    /// An event can only match the filter if its scope holds this pair, so looking the pair up is enough.
    pub fn routing_pair(&self) -> Option<(&str, &str)> {
        const SELECTIVITY: [&str; 6] = ["run_id", "task_id", "deploy_id", "project_id", "org_id", "env"];
        SELECTIVITY
            .iter()
            .find_map(|k| self.0.get_key_value(*k))
            .or_else(|| self.0.iter().next())
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl TryFrom<BTreeMap<String, String>> for Filter {
    type Error = ValidationError;

    fn try_from(map: BTreeMap<String, String>) -> Result<Self, Self::Error> {
        Self::new(map)
    }
}

impl From<Filter> for BTreeMap<String, String> {
    fn from(filter: Filter) -> Self {
        filter.0
    }
}

impl<const N: usize> TryFrom<[(&str, &str); N]> for Filter {
    type Error = ValidationError;

    fn try_from(pairs: [(&str, &str); N]) -> Result<Self, Self::Error> {
        Self::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_values_and_sizes_are_checked() {
        assert!(Scope::try_from([("project_id", "p1"), ("run_id", "r9")]).is_ok());
        assert!(Scope::try_from([("Project", "p1")]).is_err());
        assert!(Scope::try_from([("", "p1")]).is_err());
        assert!(Scope::try_from([("a_b", &*"v".repeat(257))]).is_err());
        let many: BTreeMap<String, String> =
            (0..17).map(|i| (format!("k_{}", "x".repeat(i)), "v".to_string())).collect();
        assert!(Scope::new(many).is_err());
    }

    #[test]
    fn a_filter_matches_when_every_pair_is_in_the_scope() {
        let scope = Scope::try_from([("project_id", "p1"), ("env", "prod")]).unwrap();
        assert!(Filter::default().matches(&scope));
        assert!(Filter::try_from([("project_id", "p1")]).unwrap().matches(&scope));
        assert!(Filter::try_from([("project_id", "p1"), ("env", "prod")]).unwrap().matches(&scope));
        assert!(!Filter::try_from([("project_id", "p2")]).unwrap().matches(&scope));
        assert!(!Filter::try_from([("run_id", "r1")]).unwrap().matches(&scope));
    }

    #[test]
    fn the_routing_pair_is_the_most_selective_pinned_key() {
        let f = Filter::try_from([("env", "prod"), ("project_id", "p1"), ("run_id", "r1")]).unwrap();
        assert_eq!(f.routing_pair(), Some(("run_id", "r1")));
        let f = Filter::try_from([("color", "red"), ("shade", "dark")]).unwrap();
        assert_eq!(f.routing_pair(), Some(("color", "red")));
        assert_eq!(Filter::default().routing_pair(), None);
    }
}
