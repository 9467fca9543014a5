#!/usr/bin/env bash
# Where the A2A proxy's CPU goes: runs one round of bench/a2a.sh with the server under
# `perf record --call-graph dwarf`, then charges every sample to a stage (bench/stages.py) and
# prints the table in µs of CPU per proxied call. Extra arguments go to the load generator
# (e.g. `--embedded --server-cpus 0 --client-cpus 1`).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null
fi
export PATH="$PATH:/usr/sbin"
out=${PROFILE_DIR:-$(mktemp -d)}
cargo build --release --locked --bin molecule
cargo bench --locked --bench a2a --no-run
cargo bench --locked --bench a2a -- --rounds 1 --seconds 20 --sse-runs 1 \
  --latency-requests 200 "$@" | tee "$out/report.txt" &
bench=$!
# The server is the release binary the generator starts; follow it for its whole life (it is
# idle outside the proxy's own phases).
until pid=$(pgrep -n -f 'target/release/molecule serve'); do sleep 0.2; done
perf record -q -F 499 --call-graph dwarf,16384 -p "$pid" -o "$out/perf.data" 2>/dev/null &
wait "$bench"
wait || true
cpu=$(grep -o 'proxy [0-9]* req/s ([0-9.]* µs CPU/call)' "$out/report.txt" | grep -o '([0-9.]*' | tr -d '(')
perf script -i "$out/perf.data" -F ip,sym,dso 2>/dev/null | python3 bench/stages.py --cpu-us "$cpu"
echo "profile: $out/perf.data"
