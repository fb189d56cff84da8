#!/usr/bin/env bash
# Two release hubs (ports 18091, 18092) on the PostgreSQL database hub_perf; the loadgen runs against the first.
#   psql -h 127.0.0.1 -U postgres -c 'create database hub_perf'
#   bench/pg.sh cluster --other-hub http://127.0.0.1:18092 --events 5000 --rate 1000 --batch 10
#   bench/pg.sh publish --via insert --database-url postgres://postgres@127.0.0.1:5432/hub_perf
set -u
cd "$(dirname "$0")/.."
DB=${DB:-postgres://postgres@127.0.0.1:5432/hub_perf}
pids=()
for port in 18091 18092; do
  env HUB_BIND=127.0.0.1:$port HUB_BACKEND=postgres DATABASE_URL=$DB HUB_DB_POOL_SIZE=8 HUB_PUBLISH_RATE=0 \
      HUB_MAX_OUTBOUND_BYTES=67108864 RUST_LOG=warn target/release/hub > /tmp/bench-hub-$port.log 2>&1 &
  pids+=($!)
done
sleep 2
target/release/loadgen --hub http://127.0.0.1:18091 --hub-pid "${pids[0]}" "$@" 2>&1
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
