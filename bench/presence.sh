#!/usr/bin/env bash
# What presence costs, beside the same run without it: two release hubs (ports 18093, 18094) on one log, 1,000
# subjects joining a room at once and then leaving (bench/presence.mjs), once with the room's policy keeping
# presence and a watcher told every join and leave, once without. Prints one JSON line per run.
#   BACKEND=postgres|redis|nats bench/presence.sh [members]    (the servers of bench/hubs.sh)
set -u
cd "$(dirname "$0")/.."
. bench/hubs.sh
SECRET=bench-presence-secret-long-enough-for-hs256
status=0
for presence in true false; do
  start_hubs 18093 18094 -- HUB_JWT_SECRET=$SECRET \
      HUB_TOPIC_POLICIES="$(printf '[[policy]]\ntopics = ["bench.*"]\npresence = %s\n' $presence)"
  # The hubs learn of each other from their first heartbeat.
  sleep 1
  node --experimental-websocket bench/presence.mjs http://127.0.0.1:18093 http://127.0.0.1:18094 "$SECRET" \
      "${pids[0]}" "${pids[1]}" "$([ $presence = true ] && echo 1 || echo 0)" "${1:-1000}" || status=1
  stop_hubs
done
exit $status
