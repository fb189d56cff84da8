#!/usr/bin/env bash
# Two release hubs (ports 18091, 18092) sharing one log; the loadgen runs against the first.
#   BACKEND=postgres (default): the database hub_perf (psql -h 127.0.0.1 -U postgres -c 'create database hub_perf')
#   BACKEND=redis: the Redis at $REDIS (default redis://127.0.0.1:6379), keys under the prefix hub_perf
#   bench/cluster.sh cluster --other-hub http://127.0.0.1:18092 --events 5000 --rate 1000 --batch 10
#   BACKEND=redis bench/cluster.sh publish --via http --batch 1000
#   BACKEND=nats: the NATS at $NATS (default nats://127.0.0.1:4222), stream hub_perf with $NATS_REPLICAS replicas
#     (default 1; bench/nats-cluster.sh starts a three-node cluster for NATS_REPLICAS=3)
set -u
cd "$(dirname "$0")/.."
BACKEND=${BACKEND:-postgres}
DB=${DB:-postgres://postgres@127.0.0.1:5432/hub_perf}
REDIS=${REDIS:-redis://127.0.0.1:6379}
NATS=${NATS:-nats://127.0.0.1:4222}
case "$BACKEND" in
  postgres) backend_env=(HUB_BACKEND=postgres DATABASE_URL=$DB HUB_DB_POOL_SIZE=8) ;;
  redis) backend_env=(HUB_BACKEND=redis REDIS_URL=$REDIS HUB_REDIS_PREFIX=hub_perf) ;;
  nats) backend_env=(HUB_BACKEND=nats NATS_URL=$NATS HUB_NATS_STREAM=hub_perf HUB_NATS_REPLICAS=${NATS_REPLICAS:-1}) ;;
  *) echo "BACKEND must be postgres, redis or nats" >&2; exit 2 ;;
esac
# The hubs start one after the other, each once the previous is ready: on PostgreSQL the first is the cluster's
# sequencer (SEQUENCER=second starts 18092 first, so the loadgen's hub is not).
# HUBS=1 starts only the loadgen's hub (the one-hub baseline of a two-hub figure).
ports=(18091 18092)
[ "${SEQUENCER:-first}" = second ] && ports=(18092 18091)
[ "${HUBS:-2}" = 1 ] && ports=(18091)
pids=()
for port in "${ports[@]}"; do
  env HUB_BIND=127.0.0.1:$port "${backend_env[@]}" HUB_PUBLISH_RATE=0 HUB_MAX_OUTBOUND_BYTES=67108864 RUST_LOG=warn \
      ${HUB_BIN:-target/release/hub} > /tmp/bench-hub-$port.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
  if ! curl -sf "http://127.0.0.1:$port/readyz" > /dev/null; then
    echo "the hub on $port is not ready; see /tmp/bench-hub-$port.log" >&2
    kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
    exit 1
  fi
done
[ "${ports[0]}" = 18092 ] && pids=("${pids[1]}" "${pids[0]}")
true
target/release/loadgen --hub http://127.0.0.1:18091 --hub-pid "${pids[0]}" "$@" 2>&1
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
