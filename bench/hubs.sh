# Sourced by the benches that run release hubs on one shared log (bench/cluster.sh, admin.sh, presence.sh): the
# backend's settings, and starting and stopping the hubs.
#   BACKEND=postgres (default): the database hub_perf (psql -h 127.0.0.1 -U postgres -c 'create database hub_perf')
#   BACKEND=redis: the Redis at $REDIS (default redis://127.0.0.1:6379), keys under the prefix hub_perf
#   BACKEND=nats: the NATS at $NATS (default nats://127.0.0.1:4223, the 2.15 server .ci/run starts from PyPI; the hub
#     needs 2.12 or later), stream hub_perf with $NATS_REPLICAS replicas (default 1; bench/nats-cluster.sh starts a
#     three-node cluster for NATS_REPLICAS=3)
BACKEND=${BACKEND:-postgres}
DB=${DB:-postgres://postgres@127.0.0.1:5432/hub_perf}
REDIS=${REDIS:-redis://127.0.0.1:6379}
NATS=${NATS:-nats://127.0.0.1:4223}
case "$BACKEND" in
  postgres) backend_env=(HUB_BACKEND=postgres DATABASE_URL=$DB HUB_DB_POOL_SIZE=8) ;;
  redis) backend_env=(HUB_BACKEND=redis REDIS_URL=$REDIS HUB_REDIS_PREFIX=hub_perf) ;;
  nats) backend_env=(HUB_BACKEND=nats NATS_URL=$NATS HUB_NATS_STREAM=hub_perf HUB_NATS_REPLICAS=${NATS_REPLICAS:-1}) ;;
  *) echo "BACKEND must be postgres, redis or nats" >&2; exit 2 ;;
esac

# start_hubs PORT... [-- NAME=VALUE...]: a release hub on each port (node id hub-PORT), each started once the one
# before is ready, with the backend's settings and the given ones; their pids in `pids`, in the ports' order.
# Exits 1, with every hub stopped, when one is not ready.
start_hubs() {
  local ports=() port
  while [ $# -gt 0 ] && [ "$1" != -- ]; do ports+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  pids=()
  for port in "${ports[@]}"; do
    env HUB_BIND=127.0.0.1:$port HUB_NODE_ID=hub-$port "${backend_env[@]}" RUST_LOG=warn "$@" \
        ${HUB_BIN:-target/release/hub} > /tmp/bench-hub-$port.log 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
    if ! curl -sf "http://127.0.0.1:$port/readyz" > /dev/null; then
      echo "the hub on $port is not ready; see /tmp/bench-hub-$port.log" >&2
      stop_hubs
      exit 1
    fi
  done
}

# stop_hubs: stops the hubs start_hubs started, by their pids, and waits for them.
stop_hubs() {
  kill "${pids[@]}" 2>/dev/null
  wait "${pids[@]}" 2>/dev/null
}
