#!/usr/bin/env bash
# Memory per idle WebSocket connection: two loadgen processes of PER connections each (a process here may hold
# at most 20,000 descriptors), the server's RSS read from /proc before and while they are held.
#   bench/idle.sh 9950                      # the hub, subscribed by query string
#   bench/idle.sh 9950 --by frame           # the hub, subscribed by a subscribe frame
#   PEER=nchan bench/idle.sh 9950           # nginx + Nchan (2 workers), for comparison
#   HUB_BIN=/tmp/other/hub bench/idle.sh 9950   # another build
set -u
cd "$(dirname "$0")/.."
PER=${1:-9950}
shift
PEER=${PEER:-hub}
if [ "$PEER" = nchan ]; then
  dir=$(mktemp -d /tmp/bench-nchan.XXXX)
  sed "s|__DIR__|$dir|g" bench/nchan.conf > "$dir/nginx.conf"
  nginx -c "$dir/nginx.conf" -p "$dir" || exit 1
  sleep 0.5
  SERVER=$(cat "$dir/nginx.pid")
  PIDS=$(pgrep -P "$SERVER" | tr '\n' ' ')
  URL=http://127.0.0.1:18091
else
  env ${HUB_ENV:-} HUB_BIND=127.0.0.1:18090 RUST_LOG=warn ${HUB_BIN:-target/release/hub} > /tmp/bench-hub.log 2>&1 &
  SERVER=$!
  PIDS=$SERVER
  URL=http://127.0.0.1:18090
  sleep 1.5
fi
rss() { local sum=0; for p in $PIDS; do sum=$((sum + $(awk '/VmRSS/ {print $2}' /proc/$p/status))); done; echo $sum; }
before=$(rss)
pids=()
for i in 1 2; do
  target/release/loadgen --peer "$PEER" --hub $URL idle --connections "$PER" --concurrency 200 --hold-s 15 "$@" \
      > /tmp/idle-$i.log 2>&1 &
  pids+=($!)
done
sleep 10
after=$(rss)
wait "${pids[@]}"
kill $SERVER; while kill -0 $SERVER 2>/dev/null; do sleep 0.1; done
[ "$PEER" = nchan ] && rm -rf "$dir"
held=$(grep -ho '"note":"[0-9]* connections held' /tmp/idle-1.log /tmp/idle-2.log | tr -dc '0-9\n' | awk '{s+=$1} END {print s}')
echo "idle ($PEER $*): $held connections held, RSS $before -> $after KiB, $(awk "BEGIN {printf \"%.2f\", ($after-$before)/$held}") KiB/connection"
