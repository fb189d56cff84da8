#!/usr/bin/env bash
# User-space instructions per delivery, counted by valgrind's callgrind (independent of how busy the machine is):
# a release hub (memory backend, one worker) under callgrind, SUBS subscribers at 10 events/s, once with 50
# events and once with 250, each counted from the moment the hub is ready; the difference over the extra
# deliveries is the cost of one delivery. RUNS pairs (default 3), each printed, then the median.
#   bench/callgrind.sh                     # WebSocket, 100 subscribers
#   TRANSPORT=sse bench/callgrind.sh       # or poll
#   HUB_BIN=/tmp/other/hub bench/callgrind.sh   # another build, for a before/after in one session
# Leaves the last pair's profiles in /tmp/callgrind-50.out and /tmp/callgrind-250.out (callgrind_annotate reads them).
set -eu
cd "$(dirname "$0")/.."
SUBS=${SUBS:-100}
TRANSPORT=${TRANSPORT:-ws}
RUNS=${RUNS:-3}
command -v valgrind > /dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
total() { # instructions counted in a callgrind output file
  awk '/^summary:/ { print $2 }' "$1"
}
run() { # $1: events
  local out=/tmp/callgrind-$1.out port=18093
  env HUB_WORKERS=1 HUB_BIND=127.0.0.1:$port HUB_MAX_OUTBOUND_BYTES=67108864 HUB_PUBLISH_RATE=0 RUST_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file=$out ${HUB_BIN:-target/release/hub} > /tmp/callgrind-hub.log 2>&1 &
  local hub=$!
  for _ in $(seq 1 300); do curl -sf http://127.0.0.1:$port/readyz > /dev/null && break; sleep 0.1; done
  # Start-up (the metrics clock's calibration spins for a time, not a count) is not delivery: counted from here.
  callgrind_control --zero $hub > /dev/null 2>&1
  target/release/loadgen --hub http://127.0.0.1:$port fanout --subscribers "$SUBS" --events "$1" --rate 10 \
    --batch 1 --publishers 1 --transport "$TRANSPORT" > /tmp/callgrind-loadgen-$1.log 2>&1
  kill -INT $hub; wait $hub 2> /dev/null || true
  total $out
}
per=()
for _ in $(seq 1 "$RUNS"); do
  small=$(run 50)
  large=$(run 250)
  per+=($(((large - small) / (200 * SUBS))))
  echo "{\"transport\":\"$TRANSPORT\",\"subscribers\":$SUBS,\"instructions_50\":$small,\"instructions_250\":$large,\"per_delivery\":${per[-1]}}"
done
median=$(printf '%s\n' "${per[@]}" | sort -n | sed -n "$(((RUNS + 1) / 2))p")
echo "{\"transport\":\"$TRANSPORT\",\"runs\":$RUNS,\"per_delivery_median\":$median}"
