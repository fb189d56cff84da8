#!/usr/bin/env bash
# The hub and nginx + Nchan side by side, in one session, three runs in a row of each scenario. Prints one
# summary line per run, prefixed with the scenario and the server; JSON lines go to bench-compare.jsonl.
#   cargo build --release -p hub -p loadgen && bench/compare.sh
# Needs nginx and libnginx-mod-nchan (apt-get install nginx libnginx-mod-nchan).
set -u
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
out=${OUT:-bench-compare.jsonl}
: > "$out"
run() {  # run <label> <command...>
  local label=$1; shift
  "$@" > /tmp/compare-run.log 2>&1
  grep '^{' /tmp/compare-run.log | sed "s|^{|{\"label\":\"$label\",|" >> "$out"
  echo "$label: $(grep -v '^{' /tmp/compare-run.log | grep -E 'fanout|idle' | tail -1)"
}
low="--subscribers 1000 --events 300 --rate 20 --batch 1 --publishers 8"
mid="--subscribers 1000 --events 3000 --rate 500 --batch 1 --publishers 8"
fast="--subscribers 1000 --events 2000 --rate 100000 --batch 1 --publishers 8"
for i in $(seq 1 "$RUNS"); do
  run "20/s hub"    bench/fanout.sh $low
  run "20/s nchan"  bench/nchan.sh fanout $low
  run "20/s sse hub"    bench/fanout.sh $low --transport sse
  run "20/s sse nchan"  bench/nchan.sh fanout $low --transport sse
  run "20/s poll hub"   bench/fanout.sh $low --transport poll
  run "20/s poll nchan" bench/nchan.sh fanout $low --transport poll
  run "500/s hub"   bench/fanout.sh $mid
  run "500/s nchan" bench/nchan.sh fanout $mid
  run "500/s pinned hub"   env HUB_ENV=HUB_WORKERS=1 HUB_CPU=0 LOADGEN_CPU=1 bench/fanout.sh $mid
  run "unthrottled hub"    bench/fanout.sh $fast
  run "unthrottled nchan"  bench/nchan.sh fanout $fast
  run "idle query hub"  bench/idle.sh 9950
  run "idle frame hub"  bench/idle.sh 9950 --by frame
  run "idle nchan"      env PEER=nchan bench/idle.sh 9950
done
