//! A load generator for the realtime hub: scenarios that measure what people choose a hub for, each reporting
//! throughput, latency percentiles (from a send timestamp carried in every payload), loss and duplicates (which
//! must be zero), and the hub process's CPU time and memory.
//!
//! # Layout
//! - [`client`]: WebSocket clients spread over several 127.0.0.x source addresses; payload helpers.
//! - [`measure`]: the hub process's CPU and RSS from `/proc`, latency summaries, the [`Report`].
//! - [`scenarios`]: `fanout`, `idle`, `publish`, `cluster` (fan-out across two hubs), `catchup`, `churn`.
//! - [`soak`]: a long steady mix (churn, resumes, slow consumers, every transport and publisher), every event
//!   checked against what was published.
//! - [`servers`]: throwaway PostgreSQL clusters and Redis servers, for tests and storms.
//! - [`storm`]: the soak against hubs and a log server of its own, with faults on a seeded random schedule.

pub mod client;
pub mod measure;
pub mod scenarios;
pub mod servers;
pub mod soak;
pub mod storm;

pub use measure::Report;

/// Raises this process's open-file limit, so tens of thousands of sockets fit: to 200,000 where allowed (root may
/// raise the hard limit), else to the hard limit.
pub fn raise_file_limit() -> u64 {
    const WANTED: u64 = 200_000;
    if rlimit::setrlimit(rlimit::Resource::NOFILE, WANTED, WANTED).is_ok() {
        return WANTED;
    }
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}
