#!/usr/bin/env bash
# Memory commits and TEAM searches at 100,000 memories across 1,000 workspaces, on SQLite and on
# Postgres, each against a direct call to the same database (see benches/memories.rs). Needs
# Postgres and Redis on 127.0.0.1 for the Postgres run (as .ci/run starts them). Extra arguments
# go to the load generator, e.g. `bench/memories.sh --backends sqlite --memories 20000`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin molecule
cargo bench --locked --bench memories -- "$@"
