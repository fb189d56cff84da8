#!/usr/bin/env bash
# Any scenario against a release hub: bench/one.sh [HUB_VAR=value ...] -- <loadgen scenario and flags>
#   bench/one.sh -- churn --connections 20000
#   bench/one.sh HUB_BACKEND=postgres DATABASE_URL=postgres://postgres@127.0.0.1/hub_perf -- publish --via http
set -u
cd "$(dirname "$0")/.."
envs=()
while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
env HUB_BIND=127.0.0.1:18090 HUB_MAX_OUTBOUND_BYTES=67108864 HUB_PUBLISH_RATE=0 RUST_LOG=${BENCH_LOG:-warn} "${envs[@]}" \
    target/release/hub > /tmp/bench-hub.log 2>&1 &
HUB=$!
sleep 1.5
target/release/loadgen --hub http://127.0.0.1:18090 --hub-pid $HUB "$@" 2>&1
kill $HUB; wait $HUB 2>/dev/null
