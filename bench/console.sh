#!/usr/bin/env bash
# The operator console in Debian's Chromium: register-to-badge latency over 50 agents beside a
# plain /ws client, and time to interactive with 10,000 workspaces beside the browser's own
# fetch of the list (bench/console.py). Runs the release binary on the embedded default.
# Extra arguments go to the script, e.g. `bench/console.sh --agents 20 --workspaces 2000`.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }
cargo build --release --locked --bin molecule
python3 -m venv target/interop-venv
target/interop-venv/bin/pip install -q -r tests/interop/requirements.txt

DATA="$(mktemp -d)"
TOKEN="bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PORT=18480
# The bench creates 10,000 workspaces from one address: the per-IP limiter would refuse most.
MOLECULE_DATA_DIR="$DATA" ADMIN_TOKEN="$TOKEN" MOLECULE_LISTEN="127.0.0.1:$PORT" RUST_LOG=warn RATE_LIMIT=100000000 \
  LIVENESS_TTL_SECONDS=3 \
  target/release/molecule serve &
SERVER=$!
trap 'kill $SERVER; rm -rf "$DATA"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.2; done
mkdir -p target/screenshots
target/interop-venv/bin/python bench/console.py "http://127.0.0.1:$PORT" "$TOKEN" --shots target/screenshots "$@"
