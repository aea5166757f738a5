#!/usr/bin/env bash
# Starts a fresh Tansu broker on 127.0.0.1:19092 (sqlite engine, in $1/broker) and
# `sluice serve --storage kafka` on 127.0.0.1:18080 (release build), for the Kafka
# benchmarks in BENCHMARKS.md. Stops whatever these two ports ran before.
# Usage: scripts/kafka-bench-env.sh [DIR]   (default /tmp/sluice-kafka-bench)
set -euo pipefail
dir="${1:-/tmp/sluice-kafka-bench}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/tansu.sh" "$root/target/tansu"
pkill -f "sluice serve --storage kafka --kafka-bootstrap 127.0.0.1:19092" || true
pkill -f "tansu broker --listener-url tcp://127.0.0.1:19092" || true
sleep 1
rm -rf "$dir" && mkdir -p "$dir/broker"
cd "$dir/broker"
nohup "$root/target/tansu/bin/tansu" broker \
  --listener-url tcp://127.0.0.1:19092 --advertised-listener-url tcp://127.0.0.1:19092 \
  --storage-engine sqlite://tansu.db > tansu.log 2>&1 < /dev/null &
cd "$root"
cargo build --release -q
nohup "$root/target/release/sluice" serve --storage kafka --kafka-bootstrap 127.0.0.1:19092 \
  --listen 127.0.0.1:18080 --data-dir "$dir/data" > "$dir/sluice.log" 2>&1 < /dev/null &
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:18080/health > /dev/null 2>&1 && break
  sleep 0.1
done
echo "sluice (pid $(pgrep -f 'sluice serve --storage kafka --kafka-bootstrap 127.0.0.1:19092')) on http://127.0.0.1:18080, Tansu on 127.0.0.1:19092, logs in $dir"
