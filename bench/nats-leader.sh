#!/usr/bin/env bash
# The pause a NATS stream leader's death costs subscribers: a three-node cluster (bench/nats-cluster.sh), two release
# hubs on a stream with 3 replicas, the cluster scenario at 1,000 events/s with idempotency keys (a publish answered
# 503 during the election is retried, as a service would), and the stream's leader SIGKILLed 4 s in and started
# again 3 s later. The max latency the load generator reports is the longest pause; loss and duplicates must be 0.
# Prints one JSON line: the pause, the server's own election (the kill to `new stream leader` in a node's log) and
# the hub's part beyond it.
#   bench/nats-leader.sh [--events 10000] >> bench/results/nats-leader-DATE.jsonl
set -u
cd "$(dirname "$0")/.."
# The server: $NATS_SERVER, else the one .ci/run installs from PyPI (target/nats-venv), else nats-server on PATH.
NATS_SERVER=${NATS_SERVER:-$( [ -x target/nats-venv/bin/nats-server ] && echo target/nats-venv/bin/nats-server || echo nats-server)}
NATS=$(bench/nats-cluster.sh) || exit 1
dir=/tmp/bench-nats
pids=()
for port in 18091 18092; do
  env HUB_BIND=127.0.0.1:$port HUB_BACKEND=nats NATS_URL=$NATS HUB_NATS_STREAM=hub_perf HUB_NATS_REPLICAS=3 \
      HUB_PUBLISH_RATE=0 RUST_LOG=warn ${HUB_BIN:-target/release/hub} > /tmp/bench-hub-$port.log 2>&1 &
  pids+=($!)
done
for port in 18091 18092; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" > /dev/null && break; sleep 0.1; done
done
target/release/loadgen --hub http://127.0.0.1:18091 --hub-pid "${pids[0]}" cluster --other-hub http://127.0.0.1:18092 \
  --events 10000 --rate 1000 --batch 10 --idempotent "$@" > /tmp/bench-nats-leader.json &
loadgen=$!
sleep 4
leader=$(python3 -c '
import json, urllib.request
for port in (18222, 18223, 18224):
    try:
        jsz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz?streams=true", timeout=2))
    except OSError:
        continue
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            leader = stream.get("cluster", {}).get("leader")
            if stream["name"] == "hub_perf" and leader:
                print(leader)
                raise SystemExit')
[ -n "$leader" ] || { echo "no leader found for hub_perf" >&2; exit 1; }
echo "$(date -u +%H:%M:%S.%N) killing the stream leader $leader" >&2
killed_at=$(date -u +%s.%N)
kill -9 "$(cat "$dir/$leader.pid")"
sleep 3
i=${leader#n}
routes=$(for j in 0 1 2; do if [ "$j" != "$i" ]; then printf 'nats://127.0.0.1:%s,' $((16222 + j)); fi; done)
"$NATS_SERVER" -a 127.0.0.1 -js -n "$leader" -p $((14222 + i)) -m $((18222 + i)) -sd "$dir/$leader" \
  --cluster_name bench --cluster "nats://127.0.0.1:$((16222 + i))" --routes "${routes%,}" >> "$dir/$leader.log" 2>&1 &
echo $! > "$dir/$leader.pid"
wait "$loadgen"
kill "${pids[@]}"; wait "${pids[@]}" 2>/dev/null
# The nodes' logs (the new leader's election time) stay in /tmp/bench-nats-logs.
mkdir -p /tmp/bench-nats-logs && cp "$dir"/*.log /tmp/bench-nats-logs/
bench/nats-cluster.sh stop
python3 - "$killed_at" /tmp/bench-nats-leader.json /tmp/bench-nats-logs/*.log <<'PY'
import json, sys
from datetime import datetime, timezone
killed_at, report, logs = float(sys.argv[1]), json.load(open(sys.argv[2])), sys.argv[3:]
elected = []
for log in logs:
    for line in open(log, errors="replace"):
        # [pid] 2026/12/07 03:10:11.123456 [INF] JetStream cluster new stream leader for '$G > hub_perf'
        if "new stream leader" in line and "hub_perf" in line:
            stamp = " ".join(line.split()[1:3])
            at = datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
            if at > killed_at:
                elected.append(at)
pause = report["latency_ms"]["max"] / 1000
election = min(elected) - killed_at if elected else None
print(json.dumps({
    "max_pause_s": round(pause, 3),
    "election_s": round(election, 3) if election is not None else None,
    "hub_part_s": round(max(0.0, pause - election), 3) if election is not None else None,
    "loss": report["loss"],
    "duplicates": report["duplicates"],
    "p50_ms": report["latency_ms"]["p50"],
}))
PY
