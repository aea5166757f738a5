#!/usr/bin/env bash
# Installs Tansu, the Apache-licensed Kafka-compatible broker the Kafka tests run
# against (sqlite storage engine), into $1 (default target/tansu). Idempotent, pinned,
# and safe to call from several test processes at once (they queue on a lock).
# A clean build takes 10-12 minutes on 2 cores; a tansu already in ~/.cargo/bin at the
# pinned version is reused.
set -euo pipefail
root="${1:-target/tansu}"
version=0.6.0
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9
if [ -x "$root/bin/tansu" ]; then
  exit 0
fi
if [ -x "$HOME/.cargo/bin/tansu" ] && "$HOME/.cargo/bin/tansu" --version 2>/dev/null | grep -q "$version"; then
  mkdir -p "$root/bin"
  cp "$HOME/.cargo/bin/tansu" "$root/bin/tansu"
  exit 0
fi
echo "building Tansu $version (about 12 minutes, once)" >&2
cargo install tansu --version "$version" --locked --features dynostore,libsql --root "$root"
# Cached for other checkouts of this machine.
mkdir -p "$HOME/.cargo/bin"
cp -n "$root/bin/tansu" "$HOME/.cargo/bin/tansu" 2>/dev/null || true
