//! The command line: `hub` serves (the default), `hub migrate` applies the PostgreSQL migrations, `hub smoke` checks
//! a running hub. Every setting is also an environment variable ([`Settings`]).

use clap::{Parser, Subcommand};

use crate::settings::Settings;
use crate::smoke::SmokeArgs;

/// The realtime hub: WebSocket, SSE and long-poll delivery of events from an event log.
#[derive(Debug, Clone, Parser)]
#[command(name = "hub", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve (the default).
    Serve,
    /// Apply the PostgreSQL migrations to DATABASE_URL and exit (for a Kubernetes Job before a rollout).
    Migrate,
    /// Check a running hub after a deploy: readiness, health, and a probe event over WebSocket, SSE and long-poll.
    Smoke(SmokeArgs),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::settings::Backend;

    #[test]
    fn flags_are_the_variable_names_in_kebab_case() {
        let cli = Cli::try_parse_from([
            "hub",
            "--hub-bind",
            "0.0.0.0:9000",
            "--hub-backend",
            "postgres",
            "--hub-retention",
            "90m",
            "--hub-memory-capacity",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.settings.bind, "0.0.0.0:9000");
        assert_eq!(cli.settings.backend, Some(Backend::Postgres));
        assert_eq!(cli.settings.retention, Some(Duration::from_secs(90 * 60)));
        assert_eq!(cli.settings.memory_capacity, 5);
    }
}
