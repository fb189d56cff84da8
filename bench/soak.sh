#!/usr/bin/env bash
# The soak against two release hubs (ports 18091, 18092) sharing one log, started fresh here and stopped after.
#   BACKEND=postgres (default): a fresh database hub_soak on 127.0.0.1:5432; the publisher crate writes into it too;
#     PostgreSQL loses nothing, so the soak counts any reset as a violation (--lossless)
#   BACKEND=redis: the Redis at $REDIS (default redis://127.0.0.1:6379), keys under a fresh prefix soak<epoch>,
#     deleted after a run that passed, so that runs do not pile up in a shared Redis
#   BACKEND=nats: a three-node JetStream cluster of bench/nats-cluster.sh (started here, stopped after), the
#     stream replicated on all three (R3); nothing is lost, so any reset is a violation (--lossless)
#   LOADGEN=path: another loadgen binary (default target/release/loadgen), to compare two builds of the instrument
#   HUB_BIN=path: another hub binary (default target/release/hub)
#   bench/soak.sh --duration 30m --connections 5000 --churn 200 --out /tmp/soak-pg.jsonl
# For faults, loadgen starts hubs and a log server of its own: target/release/loadgen storm --help.
set -u
cd "$(dirname "$0")/.."
BACKEND=${BACKEND:-postgres}
REDIS=${REDIS:-redis://127.0.0.1:6379}
LOADGEN=${LOADGEN:-target/release/loadgen}
case "$BACKEND" in
  postgres)
    psql -q -h 127.0.0.1 -U postgres -c 'drop database if exists hub_soak with (force)' -c 'create database hub_soak'
    DB=postgres://postgres@127.0.0.1:5432/hub_soak
    backend_env=(HUB_BACKEND=postgres DATABASE_URL=$DB HUB_DB_POOL_SIZE=8)
    sink=(--database-url "$DB" --lossless) ;;
  redis)
    prefix=soak$(date +%s)
    backend_env=(HUB_BACKEND=redis REDIS_URL=$REDIS HUB_REDIS_PREFIX=$prefix)
    sink=(--redis-url "$REDIS" --redis-prefix "$prefix") ;;
  nats)
    NATS=$(bench/nats-cluster.sh) || exit 1
    backend_env=(HUB_BACKEND=nats NATS_URL=$NATS HUB_NATS_STREAM=soak HUB_NATS_REPLICAS=3)
    sink=(--nats-url "$NATS" --nats-stream soak --lossless) ;;
  *) echo "BACKEND must be postgres, redis or nats" >&2; exit 2 ;;
esac
pids=()
for port in 18091 18092; do
  env HUB_BIND=127.0.0.1:$port HUB_NODE_ID=soak-$port "${backend_env[@]}" HUB_PUBLISH_RATE=0 \
      HUB_MAX_OUTBOUND_BYTES=${MAX_OUTBOUND:-65536} \
      HUB_SOCKET_SEND_BUFFER=${MAX_OUTBOUND:-65536} RUST_LOG=warn ${HUB_BIN:-target/release/hub} > /tmp/soak-hub-$port.log 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
  if ! curl -sf "http://127.0.0.1:$port/readyz" > /dev/null; then
    echo "the hub on $port is not ready; see /tmp/soak-hub-$port.log" >&2
    kill "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
    [ "$BACKEND" = nats ] && bench/nats-cluster.sh stop
    exit 1
  fi
done
"$LOADGEN" --hub http://127.0.0.1:18091 --hub-pid "${pids[0]},${pids[1]}" soak \
  --other-hubs http://127.0.0.1:18092 "${sink[@]}" "$@"
status=$?
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
[ "$BACKEND" = nats ] && bench/nats-cluster.sh stop
if [ "$BACKEND" = redis ]; then
  # Every key of the log's prefix, as the Redis test helper finds them; a failed run keeps its keys to look at.
  if [ "$status" -eq 0 ]; then
    redis-cli -u "$REDIS" --scan --pattern "{$prefix}:*" | xargs -r redis-cli -u "$REDIS" del > /dev/null
  else
    echo "keeping the Redis keys {$prefix}:* of the failed soak" >&2
  fi
fi
exit $status
