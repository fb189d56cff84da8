//! Integration tests: real hubs on loopback ports driven by real clients. One binary for link time.

#[macro_use]
mod db;
#[macro_use]
mod kv;
#[macro_use]
mod natsd;
mod auth;
#[macro_use]
mod backends;
mod admin;
mod browser;
mod drift;
mod helpers;
mod js_client;
mod limits;
mod loadgen_smoke;
mod nats;
mod observability;
mod operations;
mod ordering;
mod partition;
mod policies;
mod poll;
mod postgres;
mod presence;
mod process;
mod profiles;
mod publish;
mod publishing;
mod redis;
mod security;
mod slow_consumer;
mod smoke;
mod soak;
mod sources;
mod sse;
mod tail;
mod tokens;
mod websocket;
