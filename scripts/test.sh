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
# The proxy alone, as the container builds it: no `demo` feature, so no test
# bed (a check, not a build: cheap).
cargo check --no-default-features --bin pgsplit --locked
# Unit, property, integration and doc tests of both crates (pgsplit and the
# test bed, testbed/); benches are built and run once in test mode so they
# cannot rot.
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
# Fuzzing, CI length: each cargo-fuzz target for FUZZ_SECONDS (default 60 s)
# from its seed corpus. Skipped, saying so, where there is no nightly
# toolchain; cargo-fuzz is installed if missing. FUZZ_SECONDS=0 leaves it out.
if [ "${FUZZ_SECONDS:-60}" != 0 ]; then
    SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}" bash fuzz/run.sh
fi
