//! Integration tests: real hubs on loopback ports driven by real clients. One binary for link time.

mod helpers;
mod operations;
mod ordering;
mod publish;
mod websocket;
