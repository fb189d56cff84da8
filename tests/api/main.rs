//! Integration tests: real hubs on loopback ports driven by real clients. One binary for link time.

#[macro_use]
mod db;
mod helpers;
mod operations;
mod ordering;
mod postgres;
mod publish;
mod websocket;
