#!/usr/bin/env bash
# The hardening audits' attacks against servers on the embedded default (see
# benches/abuse.rs). Second round: unauthenticated gRPC and REST floods, idle connections,
# slowloris (the server's resident memory against its idle figure, and whether /health still
# answers). Third round, each on a fresh server: the pre-auth fill (registers and sign-ins
# refused during it), one credential's unfinished messages (peak RSS, refused, still held),
# header-only calls at a 1,000-connection cap (held over time, /health), and made-up metrics
# labels (/metrics size). Extra arguments go to the generator, e.g.
# `bench/abuse.sh --round 3 --server /path/to/other/molecule`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin molecule
cargo bench --locked --bench abuse -- "$@"
