#!/usr/bin/env bash
# Hub memory per idle WebSocket connection: two loadgen processes of PER connections each (a process here may
# hold at most 20,000 descriptors), the hub's RSS read from /proc before and while they are held.
set -u
cd "$(dirname "$0")/.."
PER=${1:-9950}
env ${HUB_ENV:-} HUB_BIND=127.0.0.1:18090 RUST_LOG=warn target/release/hub > /tmp/bench-hub.log 2>&1 &
HUB=$!
sleep 1.5
rss() { awk '/VmRSS/ {print $2}' /proc/$HUB/status; }
before=$(rss)
pids=()
for i in 1 2; do
  target/release/loadgen --hub http://127.0.0.1:18090 idle --connections "$PER" --concurrency 200 --hold-s 15 \
      > /tmp/idle-$i.log 2>&1 &
  pids+=($!)
done
sleep 10
after=$(rss)
wait "${pids[@]}"
kill $HUB; wait $HUB 2>/dev/null
conns=$((2 * PER))
echo "idle: $conns connections, hub RSS $before -> $after KiB, $(awk "BEGIN {printf \"%.2f\", ($after-$before)/$conns}") KiB/connection"
