//! The realtime hub server.
//!
//! Events enter through `POST /api/publish` (or straight into the log, from the publisher crate), are appended to
//! the event log, followed by the storage actor, routed by topic rooms and delivered by the dispatcher to
//! WebSocket sessions in id order. `docs/ARCHITECTURE.md` tells the path of one event.
//!
//! # Layout
//! The folders follow an event's path: routes → connections → fan-out, with the storage crate below; each module
//! uses only modules of its own layer or lower ones (`.ci/layers.py` checks it).
//!
//! | layer | modules | what they own |
//! | --- | --- | --- |
//! | 6 | [`startup`], [`cli`], [`smoke`] | [`Application`]: build, port, run, graceful shutdown; the command line; `hub smoke` |
//! | 5 | [`routes`] | the HTTP endpoints: WebSocket and SSE upgrades, long-poll, publish, health, dashboard |
//! | 4 | [`connections`] | the connection actors (WebSocket, SSE), their subscriptions' engine, outbound queues, heartbeats |
//! | 3 | [`state`] | [`state::HubState`], what routes and connections share |
//! | 2 | [`fanout`], [`cluster`], [`sources`] | dispatcher, topic rooms, subscriptions, waiting long-polls, open sessions; the hubs of a cluster as one (operators' commands, revocations); database sources |
//! | 1 | [`telemetry`], [`auth`], [`limits`] | logs, traces, metrics and counts; tokens and grants; connection, waiter and rate limits |
//! | 0 | [`delivery`], [`settings`], [`error`] | the vocabulary: connections, subscribers and deliveries; configuration; HTTP errors |

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod connections;
pub mod delivery;
pub mod error;
pub mod fanout;
pub mod limits;
pub mod routes;
pub mod settings;
pub mod smoke;
pub mod sources;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use settings::Settings;
pub use startup::Application;
