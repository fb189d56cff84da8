//! Where the fan-out hands a connection its deliveries: straight into its outbound queue when it can, through the
//! session's mailbox when it must.
//!
//! A live delivery used to wake two tasks on its way to the socket: the session actor (its mailbox), then the
//! HTTP response body that drains the outbound queue. Here the dispatcher applies the session's rule for live
//! events itself (nothing at or below the id the subscription reached) and writes the frames into the queue, so a
//! delivery wakes only the body. It may do so only where that rule is all there is to apply:
//! - the subscription is live: the session registered it with the id it reached, after it wrote its replay, the
//!   events it buffered meanwhile and its `live` marker ([`DirectSink::go_live`]). Until then a delivery goes to
//!   the session, which buffers it as before;
//! - the fan-out step carries one event: a step of several (one batch of several, or batches merged because
//!   dispatch fell behind) is written by the sessions, spreading the encoding over every worker rather than the
//!   fan-out's one thread, and the mailbox's hop is paid once for several events (the fan-out writing everything
//!   cost a fifth of the unthrottled throughput);
//! - nothing the session was sent is still unhandled: once a delivery goes through the mailbox (a subscription not
//!   live yet, a reset, a reader past the outbound bound that the session cuts), every later one follows it there
//!   until the session has handled them all ([`DirectSink::handled`]), so a connection's frames keep the order in
//!   which the fan-out produced them.
//!
//! While anything is in the mailbox the session owns the live subscriptions' positions: it takes them from the sink
//! before it handles a delivery and gives them back after. Both sides take the sink's lock, which only they share.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::connections::outbound::{Outbound, one_chunk};
use crate::delivery::{Deliver, Delivery, SessionSink, Transport};
use actix::Recipient;

pub struct DirectSink {
    mailbox: Recipient<Deliver>,
    outbound: Arc<Outbound>,
    transport: Transport,
    /// Past this many unsent bytes the session must see the delivery: it cuts the reader.
    max_outbound_bytes: u64,
    state: Mutex<State>,
}

struct State {
    /// Deliveries sent to the mailbox that the session has not handled yet.
    in_flight: usize,
    /// The live subscriptions, by generation, with the id each has reached (owned by the fan-out while
    /// `in_flight` is 0).
    live: Vec<(u64, u64)>,
}

impl DirectSink {
    pub fn new(
        mailbox: Recipient<Deliver>,
        outbound: Arc<Outbound>,
        transport: Transport,
        max_outbound_bytes: u64,
    ) -> Self {
        let state = State { in_flight: 0, live: Vec::new() };
        Self { mailbox, outbound, transport, max_outbound_bytes, state: Mutex::new(state) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every critical section is a few comparisons and pushes, and leaves the state consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subscription of `generation` is live, having reached `through`: later deliveries may be written by the
    /// fan-out. Called after the session wrote everything that comes before them.
    pub fn go_live(&self, generation: u64, through: u64) {
        self.state().live.push((generation, through));
    }

    /// The subscription of `generation` is gone: its deliveries go to the session, which drops them.
    pub fn forget(&self, generation: u64) {
        self.state().live.retain(|(g, _)| *g != generation);
    }

    /// The id the live subscription of `generation` has reached, if it is live.
    pub fn position(&self, generation: u64) -> Option<u64> {
        self.state().live.iter().find(|(g, _)| *g == generation).map(|(_, through)| *through)
    }

    /// The session handles a delivery from its mailbox: the live subscriptions' positions, which it owns until
    /// it calls [`handled`](Self::handled).
    pub fn positions(&self) -> Vec<(u64, u64)> {
        self.state().live.clone()
    }

    /// The session handled a delivery from its mailbox, and its live subscriptions reached `positions`.
    pub fn handled(&self, positions: impl IntoIterator<Item = (u64, u64)>) {
        let mut state = self.state();
        for (generation, through) in positions {
            if let Some(entry) = state.live.iter_mut().find(|(g, _)| *g == generation) {
                entry.1 = through;
            }
        }
        state.in_flight = state.in_flight.saturating_sub(1);
    }

    /// Writes `items` when every one is for a live subscription; `None` when one is not. Returns how many frames
    /// went out (those at or below their subscription's position are skipped). The frames are already encoded
    /// ([`Delivery::wire`]): one goes into the queue as it is, several as one chunk.
    fn write_live(&self, state: &mut State, items: &[Delivery], send_now: bool) -> Option<u64> {
        if items.iter().any(|item| !state.live.iter().any(|(g, _)| *g == item.generation)) {
            return None;
        }
        let mut written = 0;
        let above = items.iter().filter(|item| {
            let Some(entry) = state.live.iter_mut().find(|(g, _)| *g == item.generation) else { return false };
            if item.id <= entry.1 {
                return false;
            }
            entry.1 = item.id;
            written += 1;
            true
        });
        if let Some(chunk) = one_chunk(above.map(|item| &item.wire)) {
            // A reader that is gone, or was cut, refuses what is written; its session stops on its own.
            if send_now {
                self.outbound.send(chunk);
            } else {
                self.outbound.write(chunk);
            }
        }
        Some(written)
    }
}

impl std::fmt::Debug for DirectSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("DirectSink").field("in_flight", &state.in_flight).field("live", &state.live).finish()
    }
}

impl SessionSink for DirectSink {
    fn deliver(&self, deliver: Deliver) {
        let mut state = self.state();
        if state.in_flight == 0
            && !deliver.spread
            && deliver.lost.is_none()
            && self.outbound.pending() <= self.max_outbound_bytes
            && let Some(written) = self.write_live(&mut state, &deliver.items, deliver.send_now)
        {
            crate::telemetry::instruments::delivered(self.transport, written);
            return;
        }
        state.in_flight += 1;
        drop(state);
        self.mailbox.do_send(deliver);
    }
}

#[cfg(test)]
mod tests {
    use actix::prelude::*;
    use bytestring::ByteString;
    use futures_util::StreamExt;

    use super::*;
    use crate::connections::outbound::OutboundBody;

    /// The ids of what reached a session's mailbox, one entry per `Deliver`.
    type Received = Arc<Mutex<Vec<Vec<u64>>>>;

    /// A session's mailbox that records what reached it.
    struct Mailbox(Received);

    impl Actor for Mailbox {
        type Context = Context<Self>;
    }

    impl Handler<Deliver> for Mailbox {
        type Result = ();

        fn handle(&mut self, msg: Deliver, _: &mut Self::Context) {
            self.0.lock().unwrap().push(msg.items.iter().map(|d| d.id).collect());
        }
    }

    fn sse_sink() -> (DirectSink, Arc<Outbound>, Received) {
        let outbound = Arc::new(Outbound::default());
        let mailbox = Arc::new(Mutex::new(Vec::new()));
        let recipient = Mailbox(mailbox.clone()).start().recipient();
        (DirectSink::new(recipient, outbound.clone(), Transport::ServerSentEvents, 1 << 20), outbound, mailbox)
    }

    fn ws_sink() -> (DirectSink, Arc<Outbound>) {
        let outbound = Arc::new(Outbound::default());
        let recipient = Mailbox(Arc::default()).start().recipient();
        (DirectSink::new(recipient, outbound.clone(), Transport::WebSocket, 1 << 20), outbound)
    }

    fn deliver(generation: u64, ids: &[u64]) -> Deliver {
        let items = ids
            .iter()
            .map(|id| Delivery { generation, id: *id, wire: bytes::Bytes::from(format!("id: {id}\n\n")) })
            .collect();
        Deliver { lost: None, items, spread: false, send_now: false }
    }

    /// Everything written into the queue, as text.
    async fn written(outbound: &Arc<Outbound>) -> String {
        outbound.finish();
        let chunks: Vec<_> = OutboundBody::new(outbound.clone()).collect().await;
        chunks.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect()
    }

    /// Lets the mailbox actor run.
    async fn settle() {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    #[actix_web::test]
    async fn a_live_subscription_is_written_by_the_fan_out_above_its_position_only() {
        let (sink, outbound, mailbox) = sse_sink();
        sink.go_live(1, 5);
        sink.deliver(deliver(1, &[4, 5, 6, 7]));
        settle().await;
        assert_eq!(written(&outbound).await, "id: 6\n\nid: 7\n\n");
        assert!(mailbox.lock().unwrap().is_empty(), "the session was not needed");
        assert_eq!(sink.position(1), Some(7));
    }

    #[actix_web::test]
    async fn once_a_delivery_needs_the_session_later_ones_follow_it_until_it_is_handled() {
        let (sink, outbound, mailbox) = sse_sink();
        sink.go_live(1, 0);
        // Subscription 2 is still replaying: this delivery goes to the session, and so does the next, though
        // it is only for the live subscription 1.
        sink.deliver(deliver(2, &[1]));
        sink.deliver(deliver(1, &[2]));
        settle().await;
        assert_eq!(*mailbox.lock().unwrap(), vec![vec![1], vec![2]]);
        // The session handled both, reaching 2 on subscription 1: the fan-out writes again, from there.
        assert_eq!(sink.positions(), vec![(1, 0)], "the session takes the position it left");
        sink.handled([(1, 0)]);
        sink.handled([(1, 2)]);
        sink.deliver(deliver(1, &[2, 3]));
        settle().await;
        assert_eq!(written(&outbound).await, "id: 3\n\n");
        assert_eq!(mailbox.lock().unwrap().len(), 2);
    }

    #[actix_web::test]
    async fn a_reset_and_a_reader_past_the_bound_go_to_the_session() {
        let (sink, outbound, mailbox) = sse_sink();
        sink.go_live(1, 0);
        let mut lost = deliver(1, &[]);
        lost.lost = Some(protocol::ResetInfo::history_truncated(10, 12));
        sink.deliver(lost);
        sink.handled([(1, 9)]);
        outbound.write(bytes::Bytes::from(vec![b'x'; 2 << 20]));
        sink.deliver(deliver(1, &[10]));
        settle().await;
        assert_eq!(*mailbox.lock().unwrap(), vec![vec![], vec![10]]);
    }

    #[actix_web::test]
    async fn a_step_of_several_events_is_written_by_the_session() {
        let (sink, outbound, mailbox) = sse_sink();
        sink.go_live(1, 0);
        sink.deliver(Deliver { spread: true, ..deliver(1, &[1, 2]) });
        settle().await;
        assert_eq!(*mailbox.lock().unwrap(), vec![vec![1, 2]]);
        assert_eq!(written(&outbound).await, "");
    }

    #[actix_web::test]
    async fn over_websocket_the_fan_out_writes_text_frames_a_client_decodes() {
        use actix_codec::Decoder as _;
        let (sink, outbound) = ws_sink();
        sink.go_live(1, 0);
        let long = "x".repeat(300);
        for (id, text) in [(1, "first"), (2, long.as_str())] {
            let wire = Delivery::wire_form(&ByteString::from(text), Transport::WebSocket);
            sink.deliver(Deliver {
                send_now: false,
                lost: None,
                items: smallvec::smallvec![Delivery { generation: 1, id, wire }],
                spread: false,
            });
        }
        outbound.finish();
        let chunks: Vec<_> = OutboundBody::new(outbound.clone()).collect().await;
        let mut bytes = bytes::BytesMut::new();
        for chunk in chunks {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        let mut client = actix_http::ws::Codec::new().client_mode();
        let mut texts = Vec::new();
        while let Some(frame) = client.decode(&mut bytes).unwrap() {
            let actix_http::ws::Frame::Text(text) = frame else { panic!("{frame:?}") };
            texts.push(String::from_utf8(text.to_vec()).unwrap());
        }
        assert_eq!(texts, ["first", long.as_str()]);
        assert!(bytes.is_empty(), "nothing but whole frames");
    }

    #[actix_web::test]
    async fn nothing_is_written_after_the_body_is_finished() {
        let (sink, outbound, _) = sse_sink();
        sink.go_live(1, 0);
        outbound.write(bytes::Bytes::from_static(b"event: @disconnect\n\n"));
        outbound.finish();
        sink.deliver(deliver(1, &[1]));
        assert_eq!(written(&outbound).await, "event: @disconnect\n\n");
    }
}
