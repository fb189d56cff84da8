#!/usr/bin/env bash
# A three-node NATS JetStream cluster on loopback for the benchmarks (client ports 14222-14224, monitoring
# 18222-18224, stores under /tmp/bench-nats). Prints the NATS_URL; `bench/nats-cluster.sh stop` stops it.
#   NATS=$(bench/nats-cluster.sh) && BACKEND=nats NATS_REPLICAS=3 NATS=$NATS bench/cluster.sh cluster …
set -eu
cd "$(dirname "$0")/.."
# The server: $NATS_SERVER, else the one .ci/run installs from PyPI (target/nats-venv), else nats-server on PATH.
NATS_SERVER=${NATS_SERVER:-$( [ -x target/nats-venv/bin/nats-server ] && echo target/nats-venv/bin/nats-server || echo nats-server)}
dir=/tmp/bench-nats
if [ "${1:-start}" = stop ]; then
  for pid in "$dir"/*.pid; do [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true; done
  # Gone before their stores are removed (a server still writing its store makes `rm` fail).
  for pid in "$dir"/*.pid; do
    for _ in $(seq 1 100); do [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && sleep 0.1 || break; done
  done
  rm -rf "$dir"
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
for i in 0 1 2; do
  routes=$(for j in 0 1 2; do if [ "$j" != "$i" ]; then printf 'nats://127.0.0.1:%s,' $((16222 + j)); fi; done)
  "$NATS_SERVER" -a 127.0.0.1 -js -n "n$i" -p $((14222 + i)) -m $((18222 + i)) -sd "$dir/n$i" \
    --cluster_name bench --cluster "nats://127.0.0.1:$((16222 + i))" --routes "${routes%,}" \
    > "$dir/n$i.log" 2>&1 &
  echo $! > "$dir/n$i.pid"
done
# Wait until JetStream has a meta leader that sees both other nodes.
for _ in $(seq 1 100); do
  for m in 18222 18223 18224; do
    # Only the meta leader lists its replicas.
    if curl -s "http://127.0.0.1:$m/jsz" | python3 -c 'import json,sys; m=json.load(sys.stdin)["meta_cluster"]; sys.exit(0 if sum(1 for r in m.get("replicas", []) if r.get("current")) == 2 else 1)' 2>/dev/null; then
      echo "nats://127.0.0.1:14222,nats://127.0.0.1:14223,nats://127.0.0.1:14224"
      exit 0
    fi
  done
  sleep 0.1
done
echo "the bench NATS cluster did not form; see $dir/*.log" >&2
exit 1
