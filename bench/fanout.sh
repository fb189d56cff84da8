#!/usr/bin/env bash
# Fan-out on the memory backend: a release hub on 127.0.0.1:18090 and the loadgen against it, on one machine.
#   bench/fanout.sh --subscribers 1000 --events 2000 --rate 500
#   HUB_ENV="HUB_WORKERS=1" HUB_CPU=0 LOADGEN_CPU=1 bench/fanout.sh --rate 500 --batch 1 --publishers 8
# HUB_CPU / LOADGEN_CPU pin the hub and the load generator to those cores (taskset); HUB_BIN runs another build.
set -u
cd "$(dirname "$0")/.."
pin() { if [ -n "${1:-}" ]; then echo "taskset -c $1"; fi; }
env ${HUB_ENV:-} HUB_BIND=127.0.0.1:18090 HUB_MAX_OUTBOUND_BYTES=67108864 HUB_PUBLISH_RATE=0 RUST_LOG=warn \
    $(pin "${HUB_CPU:-}") ${HUB_BIN:-target/release/hub} > /tmp/bench-hub.log 2>&1 &
HUB=$!
sleep 1.5
$(pin "${LOADGEN_CPU:-}") target/release/loadgen --hub http://127.0.0.1:18090 --hub-pid $HUB fanout "$@" 2>&1
kill $HUB; wait $HUB 2>/dev/null
