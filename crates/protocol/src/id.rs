//! The event id assigned by the log.

use serde::{Deserialize, Serialize};

use crate::ValidationError;

/// An event id: an integer with `1 <= id < 2^53`, assigned by the log, strictly increasing in visibility order.
///
/// `0` never names an event; it is only meaningful as a resume point ("everything retained").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct EventId(u64);

impl EventId {
    /// One past the largest id: ids stay exact in JavaScript numbers.
    pub const LIMIT: u64 = 1 << 53;

    pub fn new(id: u64) -> Result<Self, ValidationError> {
        if id == 0 || id >= Self::LIMIT {
            return Err(ValidationError::new(format!("event id must be an integer from 1 to 2^53-1, got {id}")));
        }
        Ok(Self(id))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for EventId {
    type Error = ValidationError;

    fn try_from(id: u64) -> Result<Self, Self::Error> {
        Self::new(id)
    }
}

impl From<EventId> for u64 {
    fn from(id: EventId) -> u64 {
        id.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses a resume point (`since`, `after`, `Last-Event-ID`): an integer from 0 to 2^53-1.
pub fn parse_position(raw: &serde_json::Value, field: &str) -> Result<u64, ValidationError> {
    match raw.as_u64() {
        Some(n) if n < EventId::LIMIT => Ok(n),
        _ => Err(ValidationError::new(format!("{field} must be an integer event id from 0 to 2^53-1, got {raw}"))),
    }
}

/// Parses a resume point given as text (query parameters, `Last-Event-ID`).
pub fn parse_position_str(raw: &str, field: &str) -> Result<u64, ValidationError> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n < EventId::LIMIT => Ok(n),
        _ => Err(ValidationError::new(format!("{field} must be an integer event id from 0 to 2^53-1, got {raw:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_outside_one_to_two_pow_53_are_rejected() {
        assert!(EventId::new(0).is_err());
        assert!(EventId::new(1 << 53).is_err());
        assert_eq!(EventId::new((1 << 53) - 1).unwrap().get(), (1 << 53) - 1);
    }

    #[test]
    fn positions_reject_negative_fractional_and_textual_values() {
        for bad in [serde_json::json!(-1), serde_json::json!(1.5), serde_json::json!("3")] {
            assert!(parse_position(&bad, "since").is_err(), "{bad} accepted");
        }
        assert_eq!(parse_position(&serde_json::json!(0), "since").unwrap(), 0);
        assert!(parse_position_str("-4", "after").is_err());
        assert_eq!(parse_position_str("42", "after").unwrap(), 42);
    }
}
