//! The heartbeat tickers: one per transport, telling the open sessions of one slot at a time that their heartbeat
//! is due ([`Sessions::heartbeat`](crate::fanout::sessions::Sessions::heartbeat)), so that no session keeps a timer of its own.

use std::sync::Weak;
use std::time::Duration;

use tracing::debug;

use crate::delivery::Transport;
use crate::fanout::sessions::HEARTBEAT_SLOTS;
use crate::state::HubState;

/// Starts the heartbeat ticker of each transport; each ends when shutdown begins or the hub is gone.
pub fn start_heartbeats(hub: &actix_web::web::Data<HubState>) {
    let tickers =
        [(Transport::WebSocket, hub.settings.heartbeat), (Transport::ServerSentEvents, hub.settings.sse_heartbeat)];
    for (transport, interval) in tickers {
        let hub = std::sync::Arc::downgrade(&hub.clone().into_inner());
        tokio::spawn(heartbeats(hub, transport, interval));
    }
}

async fn heartbeats(hub: Weak<HubState>, transport: Transport, interval: Duration) {
    let period = (interval / HEARTBEAT_SLOTS as u32).max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let Some(mut shutdown) = hub.upgrade().map(|hub| hub.shutdown.clone()) else { return };
    for tick in 0u64.. {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
        let Some(hub) = hub.upgrade() else { return };
        let told = hub.sessions.heartbeat(transport, tick % HEARTBEAT_SLOTS);
        debug!(?transport, told, "heartbeats");
    }
}
