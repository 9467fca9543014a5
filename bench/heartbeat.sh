#!/usr/bin/env bash
# Heartbeat ingest against redis-benchmark on the same Redis, in one run (see benches/heartbeat.rs).
# Needs Postgres and Redis on 127.0.0.1 (as .ci/run starts them). Extra arguments go to the load
# generator, e.g. `bench/heartbeat.sh --agents 2000 --seconds 20`, or `--embedded` (no Postgres or
# Redis for the server) and `--server-cpus 0 --client-cpus 1` (taskset lists).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin molecule
cargo bench --locked --bench heartbeat -- "$@"
