#!/usr/bin/env bash
# The vendored actix-http is the published crate plus vendor/actix-http.diff, and nothing else.
#
#   vendor/actix-http.sh check             # CI: the copy equals the published release plus the diff
#   vendor/actix-http.sh update 3.21.0     # an upgrade: that release plus the diff, then Cargo.lock matched
#
# The release is fetched by cargo from the registry every other dependency comes from (`cargo vendor` in a scratch
# package outside this workspace, so the [patch] does not apply to it). The copy keeps the crate's files as published,
# but for the packaging metadata (.cargo_vcs_info.json, Cargo.toml.orig).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
copy="$here/actix-http"
diff_file="$here/actix-http.diff"

usage() { echo "usage: $0 check | update VERSION" >&2; exit 2; }
[ $# -ge 1 ] || usage
current=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$copy/Cargo.toml" | head -n 1)
case "$1" in
  check) [ $# -eq 1 ] || usage; version=$current ;;
  update) [ $# -eq 2 ] || usage; version=$2 ;;
  *) usage ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The published release, as cargo downloads it.
mkdir -p "$work/fetch/src"
: > "$work/fetch/src/lib.rs"
cat > "$work/fetch/Cargo.toml" <<EOF
[package]
name = "fetch-actix-http"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
actix-http = { version = "=$version", default-features = false }

[workspace]
EOF
(cd "$work/fetch" && cargo vendor --quiet --versioned-dirs "$work/registry" > /dev/null)
published="$work/registry/actix-http-$version"
[ -d "$published" ] || { echo "cargo vendor did not bring actix-http $version" >&2; exit 1; }
rm -f "$published/.cargo-checksum.json" "$published/.cargo_vcs_info.json" "$published/Cargo.toml.orig"

# The release with our change: the diff's paths are a/actix-http/… and b/actix-http/….
mkdir -p "$work/expected"
cp -R "$published" "$work/expected/actix-http"
if ! (cd "$work/expected" && patch --quiet -p1 --no-backup-if-mismatch < "$diff_file"); then
  echo "vendor/actix-http.diff does not apply to actix-http $version: port the change by hand" >&2
  exit 1
fi

case "$1" in
  check)
    if ! diff -r "$work/expected/actix-http" "$copy"; then
      echo "vendor/actix-http differs from actix-http $version plus vendor/actix-http.diff (above)." >&2
      echo "Change the code through the diff: edit the copy, then regenerate the diff from the release." >&2
      exit 1
    fi
    echo "ok: vendor/actix-http is actix-http $version plus vendor/actix-http.diff"
    ;;
  update)
    rm -rf "$copy"
    cp -R "$work/expected/actix-http" "$copy"
    # Resolving the workspace records the new version in Cargo.lock and changes nothing else.
    (cd "$here/.." && cargo metadata --format-version 1 > /dev/null)
    echo "vendor/actix-http is now actix-http $version plus vendor/actix-http.diff; build and test, then commit"
    ;;
esac
