#!/usr/bin/env bash
# The demo (README): a local primary, two streaming replicas and pgsplit in
# front of them; shows where statements go, then runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
exec cargo run --release --locked --quiet -- demo "$@"
