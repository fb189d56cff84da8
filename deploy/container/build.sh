#!/usr/bin/env bash
# Builds the image without a container daemon or a base-image registry: buildah (vfs storage, chroot isolation)
# runs the Dockerfile's `prebuilt` stage around the host's release binary, then runs the image as user 10001:
# `hub --version`, and the server itself on a loopback port, checked from outside with `hub smoke`.
#   deploy/container/build.sh [tag]
# HUB_PROFILE=debug assembles it around target/debug/hub instead (CI: the binary the tests ran, already built; what
# is checked is the image's assembly, which is the same for both).
set -euo pipefail
cd "$(dirname "$0")/../.."
tag=${1:-realtime-hub:ci}
command -v buildah >/dev/null || { echo "buildah is not installed (apt-get install buildah)" >&2; exit 1; }
profile=${HUB_PROFILE:-release}
case "$profile" in
  release) cargo build --release --locked -p hub --bin hub ;;
  debug) cargo build --locked -p hub --bin hub ;;
  *) echo "HUB_PROFILE must be release or debug, not $profile" >&2; exit 2 ;;
esac
deploy/container/rootfs.sh "target/$profile/hub"
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
buildah bud --quiet --layers=false --target prebuilt -t "$tag" -f Dockerfile . >/dev/null
container=$(buildah from "$tag")
trap 'buildah rm "$container" >/dev/null' EXIT
version=$(buildah run --user 10001:10001 "$container" -- /usr/local/bin/hub --version)
user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$tag")
size=$(buildah images --format '{{.Size}}' "$tag")
echo "image $tag: $version, user $user, $size"
[ "$user" = "10001:10001" ] || { echo "the image must run as 10001:10001, not $user" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
buildah run --user 10001:10001 --env HUB_BIND=127.0.0.1:$port "$container" -- /usr/local/bin/hub serve \
    > target/container-serve.log 2>&1 &
server=$!
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
status=0
RUST_LOG=warn "target/$profile/hub" smoke --url "http://127.0.0.1:$port" || status=$?
pkill -TERM -f "hub serve" -P "$server" 2>/dev/null || true
kill "$server" 2>/dev/null || true
wait "$server" 2>/dev/null || true
[ "$status" = 0 ] || { echo "the image's server failed the smoke check; its log: target/container-serve.log" >&2; exit 1; }
