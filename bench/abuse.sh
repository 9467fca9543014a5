#!/usr/bin/env bash
# The hardening audit's attacks against one server on the embedded default (see
# benches/abuse.rs): unauthenticated gRPC and REST floods, idle connections, slowloris. Prints
# the server's resident memory against its idle figure and whether /health still answers.
# Extra arguments go to the generator, e.g. `bench/abuse.sh --server /path/to/other/molecule`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin molecule
cargo bench --locked --bench abuse -- "$@"
