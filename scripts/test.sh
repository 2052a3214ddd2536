#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing, then runs every
# test against a real PostgreSQL primary and streaming replicas.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-deps.sh
if [ -f tests/drivers/install.sh ]; then
    bash tests/drivers/install.sh
fi

cargo fmt --check
# Unit, property, integration and doc tests; benches are built and run once
# in test mode so they cannot rot.
cargo test --all-targets --locked
cargo test --doc --locked
