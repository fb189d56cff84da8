#!/usr/bin/env bash
# Two release hubs (ports 18091, 18092) sharing one log (bench/hubs.sh: BACKEND and its servers); the loadgen runs
# against the first.
#   bench/cluster.sh cluster --other-hub http://127.0.0.1:18092 --events 5000 --rate 1000 --batch 10
#   BACKEND=redis bench/cluster.sh publish --via http --batch 1000
set -u
cd "$(dirname "$0")/.."
. bench/hubs.sh
# The hubs start one after the other, each once the previous is ready: on PostgreSQL the first is the cluster's
# sequencer (SEQUENCER=second starts 18092 first, so the loadgen's hub is not).
# HUBS=1 starts only the loadgen's hub (the one-hub baseline of a two-hub figure).
ports=(18091 18092)
[ "${SEQUENCER:-first}" = second ] && ports=(18092 18091)
[ "${HUBS:-2}" = 1 ] && ports=(18091)
start_hubs "${ports[@]}" -- HUB_PUBLISH_RATE=0 HUB_MAX_OUTBOUND_BYTES=67108864
[ "${ports[0]}" = 18092 ] && pids=("${pids[1]}" "${pids[0]}")
target/release/loadgen --hub http://127.0.0.1:18091 --hub-pid "${pids[0]}" "$@" 2>&1
stop_hubs
