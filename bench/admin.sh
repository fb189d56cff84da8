#!/usr/bin/env bash
# Operators' commands across two release hubs (ports 18091, 18092) on one log: bench/admin-latency.mjs disconnects a
# connection of hub B through hub A, 100 times, and prints p50/p99/max from the call to the close at the client.
#   BACKEND=postgres|redis|nats bench/admin.sh [calls]     (the servers of bench/hubs.sh)
set -u
cd "$(dirname "$0")/.."
. bench/hubs.sh
SECRET=bench-admin-secret-long-enough-for-hs256
start_hubs 18091 18092 -- HUB_JWT_SECRET=$SECRET
# The hubs learn of each other from their first heartbeat.
sleep 1
node --experimental-websocket bench/admin-latency.mjs http://127.0.0.1:18091 http://127.0.0.1:18092 "$SECRET" "${1:-100}"
status=$?
stop_hubs
exit $status
