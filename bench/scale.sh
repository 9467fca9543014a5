#!/usr/bin/env bash
# One replica holding N distinct agents (default 100,000 gRPC streams + 10,000 REST agents,
# beating every 30 s with jitter) for 5 minutes, then 1,000 of them stopping to time offline
# detection (see benches/scale.rs). Needs Postgres and Redis on 127.0.0.1 (as .ci/run starts
# them), or `--embedded`. Extra arguments go to the load generator, e.g.
# `bench/scale.sh --agents 2000 --rest-agents 0 --hold 60 --embedded`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Every stream's connection and every REST agent's socket is a descriptor, on both sides.
ulimit -n "$(ulimit -Hn)"
cargo build --release --locked --bin molecule
cargo bench --locked --bench scale -- "$@"
