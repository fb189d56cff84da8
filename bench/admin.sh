#!/usr/bin/env bash
# Operators' commands across two release hubs (ports 18091, 18092) on one log: bench/admin-latency.mjs disconnects a
# connection of hub B through hub A, 100 times, and prints p50/p99/max from the call to the close at the client.
#   BACKEND=postgres|redis|nats bench/admin.sh [calls]     (the same databases and servers as bench/cluster.sh)
set -u
cd "$(dirname "$0")/.."
BACKEND=${BACKEND:-postgres}
DB=${DB:-postgres://postgres@127.0.0.1:5432/hub_perf}
REDIS=${REDIS:-redis://127.0.0.1:6379}
NATS=${NATS:-nats://127.0.0.1:4222}
SECRET=bench-admin-secret-long-enough-for-hs256
case "$BACKEND" in
  postgres) backend_env=(HUB_BACKEND=postgres DATABASE_URL=$DB HUB_DB_POOL_SIZE=4) ;;
  redis) backend_env=(HUB_BACKEND=redis REDIS_URL=$REDIS HUB_REDIS_PREFIX=hub_perf) ;;
  nats) backend_env=(HUB_BACKEND=nats NATS_URL=$NATS HUB_NATS_STREAM=hub_perf HUB_NATS_REPLICAS=${NATS_REPLICAS:-1}) ;;
  *) echo "BACKEND must be postgres, redis or nats" >&2; exit 2 ;;
esac
pids=()
for port in 18091 18092; do
  env HUB_BIND=127.0.0.1:$port "${backend_env[@]}" HUB_JWT_SECRET=$SECRET HUB_NODE_ID=hub-$port RUST_LOG=warn \
      ${HUB_BIN:-target/release/hub} > /tmp/bench-hub-$port.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
  if ! curl -sf "http://127.0.0.1:$port/readyz" > /dev/null; then
    echo "the hub on $port is not ready; see /tmp/bench-hub-$port.log" >&2
    kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
    exit 1
  fi
done
# The hubs learn of each other from their first heartbeat.
sleep 1
node --experimental-websocket bench/admin-latency.mjs http://127.0.0.1:18091 http://127.0.0.1:18092 "$SECRET" "${1:-100}"
status=$?
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
exit $status
