//! The sinks: where published events go.

pub mod http;
pub mod memory;
pub mod nats;
pub mod postgres;
pub mod redis;
