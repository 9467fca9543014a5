#!/usr/bin/env bash
# A2A proxy vs nginx in front of the same echo agent, in one run (see benches/a2a.rs).
# Needs Postgres and Redis on 127.0.0.1 (as .ci/run starts them); installs Debian's nginx if it
# is missing. Extra arguments go to the load generator, e.g. `bench/a2a.sh --seconds 10`, or
# `--embedded` and `--server-cpus 0 --client-cpus 1` (taskset lists).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null
fi
export PATH="$PATH:/usr/sbin"
cargo build --release --locked --bin molecule
cargo bench --locked --bench a2a -- "$@"
