//! Integration tests: real hubs on loopback ports driven by real clients. One binary for link time.

#[macro_use]
mod db;
mod auth;
mod browser;
mod helpers;
mod limits;
mod loadgen_smoke;
mod operations;
mod ordering;
mod poll;
mod postgres;
mod process;
mod publish;
mod publishing;
mod slow_consumer;
mod sse;
mod tokens;
mod websocket;
