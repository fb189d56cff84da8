#!/usr/bin/env bash
# What following the log costs a hub nobody is subscribed to (docs/SCALING.md): two release hubs on one log
# (bench/hubs.sh); the loadgen publishes to the first (on PostgreSQL the sequencer) at a fixed rate, in batches of
# 100 over HTTP; the second, with no subscriber, only follows. Its CPU is read from /proc over the run and one
# second after it (so that what it still had to read counts). FOLLOWERS=k starts k followers (ports 18092…): the
# backend's own CPU over the run (every postgres process, the redis-server at $REDIS's port, the nats-server at
# $NATS's port) against k shows what each more hub costs the backend. One JSON line per backend, rate and run.
#   bench/follow.sh                          # BACKENDS="postgres redis nats" RATES="1000 10000 50000" RUNS=3
#   FOLLOWERS=3 RATES=10000 bench/follow.sh
#   BACKENDS=nats NATS=nats://127.0.0.1:4223 bench/follow.sh
set -u
cd "$(dirname "$0")/.."
RATES=${RATES:-1000 10000 50000}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
FOLLOWERS=${FOLLOWERS:-1}
tick=$(getconf CLK_TCK)
# The CPU seconds of the processes given (user + system), summed.
cpu_s() {
  local total=0 pid
  for pid in "$@"; do
    total=$(awk -v t="$tick" -v sum="$total" '{ split($0, a, ") "); split(a[2], f, " "); printf "%.3f", sum + (f[12] + f[13]) / t }' "/proc/$pid/stat" 2>/dev/null || echo "$total")
  done
  echo "$total"
}
# The backend's processes: every postgres process, or the server listening on the URL's port.
backend_pids() {
  case "$1" in
    postgres) pgrep -x postgres ;;
    redis) pgrep -f "redis-server .*:${REDIS##*:}" || pgrep -x redis-server ;;
    nats) pgrep -f "nats-server.* -p ${NATS##*:}" ;;
  esac
}
for backend in ${BACKENDS:-postgres redis nats}; do
  BACKEND=$backend
  . bench/hubs.sh
  [ "$backend" = postgres ] && psql -q -h 127.0.0.1 -U postgres -d hub_perf -c 'truncate realtime_events' 2>/dev/null
  for run in $(seq 1 "$RUNS"); do
    for rate in $RATES; do
      start_hubs 18091 $(seq 18092 $((18091 + FOLLOWERS))) -- HUB_PUBLISH_RATE=0
      followers=("${pids[@]:1}")
      server=($(backend_pids "$backend"))
      sleep 1
      idle_before=$(cpu_s "${followers[0]}"); sleep 2; idle_after=$(cpu_s "${followers[0]}")
      before=$(cpu_s "${followers[0]}")
      all_before=$(cpu_s "${followers[@]}")
      server_before=$(cpu_s "${server[@]}")
      started=$(date +%s.%N)
      report=$(target/release/loadgen --hub http://127.0.0.1:18091 publish --via http --batch 100 --publishers 8 \
                 --rate "$rate" --duration-s "$DURATION" 2>/dev/null)
      sleep 1
      after=$(cpu_s "${followers[0]}")
      all_after=$(cpu_s "${followers[@]}")
      server_after=$(cpu_s "${server[@]}")
      ended=$(date +%s.%N)
      stop_hubs
      python3 - "$backend" "$rate" "$run" "$report" "$before" "$after" "$started" "$ended" "$idle_before" "$idle_after" \
        "$FOLLOWERS" "$all_before" "$all_after" "$server_before" "$server_after" <<'PY'
import json, sys
(backend, rate, run, report, before, after, started, ended, idle0, idle1,
 followers, all0, all1, server0, server1) = sys.argv[1:]
r = json.loads(report)
events = r["events_per_s"] * r["elapsed_s"]
cpu = float(after) - float(before)
idle = (float(idle1) - float(idle0)) / 2
span = float(ended) - float(started)
server = float(server1) - float(server0)
print(json.dumps({"bench": "follow", "backend": backend, "target_rate": int(rate), "run": int(run),
                  "followers": int(followers), "events_per_s": round(r["events_per_s"]), "failed": r["loss"],
                  "follower_cpu_s": round(cpu, 3), "follower_core_share": round(cpu / span, 4),
                  "follower_idle_core_share": round(idle, 4),
                  "follower_us_per_event": round(cpu / events * 1e6, 2) if events else None,
                  "followers_cpu_s": round(float(all1) - float(all0), 3),
                  "backend_cpu_s": round(server, 3), "backend_core_share": round(server / span, 4),
                  "backend_us_per_event": round(server / events * 1e6, 2) if events else None}))
PY
    done
  done
done
