#!/usr/bin/env bash
# Any loadgen scenario against nginx + Nchan (2 workers) on 127.0.0.1:18091, the peer the hub is compared with.
#   apt-get install nginx libnginx-mod-nchan
#   bench/nchan.sh fanout --subscribers 1000 --events 300 --rate 20 --batch 1
#   bench/nchan.sh idle --connections 9950
set -u
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/bench-nchan.XXXX)
sed "s|__DIR__|$dir|g" bench/nchan.conf > "$dir/nginx.conf"
nginx -c "$dir/nginx.conf" -p "$dir" || exit 1
sleep 0.5
master=$(cat "$dir/nginx.pid")
# The loadgen sums the CPU and memory of the pids it is given: the two workers.
workers=$(pgrep -P "$master" | tr '\n' ',' | sed 's/,$//')
target/release/loadgen --peer nchan --hub http://127.0.0.1:18091 --hub-pid "$workers" "$@" 2>&1
kill "$master"; while kill -0 "$master" 2>/dev/null; do sleep 0.1; done
rm -rf "$dir"
