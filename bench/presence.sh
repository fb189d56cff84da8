#!/usr/bin/env bash
# What presence costs, beside the same run without it: two release hubs (ports 18093, 18094) on one log, 1,000
# subjects joining a room at once and then leaving (bench/presence.mjs), once with the room's policy keeping
# presence and a watcher told every join and leave, once without. Prints one JSON line per run.
#   BACKEND=postgres|redis|nats bench/presence.sh [members]    (the same databases and servers as bench/cluster.sh)
set -u
cd "$(dirname "$0")/.."
BACKEND=${BACKEND:-postgres}
DB=${DB:-postgres://postgres@127.0.0.1:5432/hub_perf}
REDIS=${REDIS:-redis://127.0.0.1:6379}
NATS=${NATS:-nats://127.0.0.1:4222}
SECRET=bench-presence-secret-long-enough-for-hs256
case "$BACKEND" in
  postgres) backend_env=(HUB_BACKEND=postgres DATABASE_URL=$DB HUB_DB_POOL_SIZE=4) ;;
  redis) backend_env=(HUB_BACKEND=redis REDIS_URL=$REDIS HUB_REDIS_PREFIX=hub_perf) ;;
  nats) backend_env=(HUB_BACKEND=nats NATS_URL=$NATS HUB_NATS_STREAM=hub_perf HUB_NATS_REPLICAS=${NATS_REPLICAS:-1}) ;;
  *) echo "BACKEND must be postgres, redis or nats" >&2; exit 2 ;;
esac
status=0
for presence in 1 0; do
  policies=$(printf '[[policy]]\ntopics = ["bench.*"]\npresence = %s\n' "$([ $presence = 1 ] && echo true || echo false)")
  pids=()
  for port in 18093 18094; do
    env HUB_BIND=127.0.0.1:$port "${backend_env[@]}" HUB_JWT_SECRET=$SECRET HUB_NODE_ID=hub-$port RUST_LOG=warn \
        HUB_TOPIC_POLICIES="$policies" \
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
  node --experimental-websocket bench/presence.mjs http://127.0.0.1:18093 http://127.0.0.1:18094 "$SECRET" \
      "${pids[0]}" "${pids[1]}" $presence "${1:-1000}" || status=1
  kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
done
exit $status
