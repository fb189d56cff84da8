#!/usr/bin/env bash
# Assembles target/container-rootfs around the host's release binary (or the one given): the binary, the shared
# libraries it links (as ldd resolves them, with the dynamic loader), CA certificates, and passwd/group entries for
# user 10001.
#   deploy/container/rootfs.sh [binary]
set -euo pipefail
cd "$(dirname "$0")/../.."
binary=${1:-target/release/hub}
[ -x "$binary" ] || { echo "build it first: cargo build --release -p hub" >&2; exit 1; }
root=target/container-rootfs
rm -rf "$root"
install -D -m 0755 "$binary" "$root/usr/local/bin/hub"
for lib in $(ldd "$binary" | grep -oE '/[^ ]+'); do
  # 0755: the dynamic loader must be executable for the kernel to start the binary through it.
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root/etc" "$root/tmp"
echo "hub:x:10001:10001:realtime hub:/nonexistent:/sbin/nologin" > "$root/etc/passwd"
echo "hub:x:10001:" > "$root/etc/group"
du -sh "$root" | awk '{print "rootfs: " $1}'
