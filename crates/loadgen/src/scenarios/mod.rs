//! The scenarios.

pub mod catchup;
pub mod churn;
pub mod fanout;
pub mod idle;
pub mod publish;
