#!/usr/bin/env bash
# Fan-out on the memory backend: a release hub on 127.0.0.1:18090 and the loadgen against it, on one machine.
#   bench/fanout.sh --subscribers 1000 --events 2000 --rate 500
set -u
cd "$(dirname "$0")/.."
env ${HUB_ENV:-} HUB_BIND=127.0.0.1:18090 HUB_MAX_OUTBOUND_BYTES=67108864 HUB_PUBLISH_RATE=0 RUST_LOG=warn \
    target/release/hub > /tmp/bench-hub.log 2>&1 &
HUB=$!
sleep 1.5
target/release/loadgen --hub http://127.0.0.1:18090 --hub-pid $HUB fanout "$@" 2>&1
kill $HUB; wait $HUB 2>/dev/null
