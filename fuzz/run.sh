#!/usr/bin/env bash
# Runs each fuzz target for SECONDS_PER_TARGET seconds (default 60), one
# after the other, under fixed memory limits, and prints a line of figures
# per target (executions per second, coverage). CI-style: exits non-zero on
# the first crash, timeout or allocation past the limits, leaving the input
# under fuzz/artifacts/<target>/.
#
#   bash fuzz/run.sh                          # every target, 60 s each
#   SECONDS_PER_TARGET=1800 bash fuzz/run.sh classify
#
# Needs a nightly toolchain and cargo-fuzz. Without nightly it says so and
# exits 0 (skipped); a missing cargo-fuzz is installed from crates.io
# (FUZZ_INSTALL=0 skips instead).
set -euo pipefail
cd "$(dirname "$0")"

SECONDS_PER_TARGET=${SECONDS_PER_TARGET:-60}
ALL_TARGETS="client_framing startup server_stream classify config"
TARGETS=${*:-$ALL_TARGETS}
# libFuzzer's limits: the process's resident memory, and any single
# allocation (a length field that made pgsplit reserve what it claims would
# trip it).
RSS_LIMIT_MB=${RSS_LIMIT_MB:-2048}
MALLOC_LIMIT_MB=${MALLOC_LIMIT_MB:-64}
# Seconds one input may take before it counts as a hang.
TIMEOUT=${TIMEOUT:-10}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: SKIPPED: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    if [ "${FUZZ_INSTALL:-1}" = 1 ]; then
        echo "fuzz: installing cargo-fuzz"
        cargo install cargo-fuzz --locked
    else
        echo "fuzz: SKIPPED: cargo-fuzz is not installed (cargo install cargo-fuzz)"
        exit 0
    fi
fi

# New inputs go to work/ (not committed); corpus/ holds the seeds.
mkdir -p work logs
summary=()
for target in $TARGETS; do
    extra=()
    max_len=16384
    case "$target" in
        classify) extra+=("-dict=sql.dict") ;;
        config) max_len=8192 ;;
    esac
    mkdir -p "work/$target" "corpus/$target"
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s"
    log="logs/$target.log"
    cargo +nightly fuzz run -O "$target" "work/$target" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout="$TIMEOUT" \
        -rss_limit_mb="$RSS_LIMIT_MB" -malloc_limit_mb="$MALLOC_LIMIT_MB" \
        -max_len="$max_len" -print_final_stats=1 "${extra[@]}" >"$log" 2>&1 || {
        tail -n 60 "$log"
        echo "fuzz: $target FAILED (log: fuzz/$log, input: fuzz/artifacts/$target/)"
        exit 1
    }
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    corpus=$(grep -o 'corp: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
    summary+=("$(printf '%-15s %6ss %12s runs %8s/s  cov %6s  ft %7s  corpus %6s' \
        "$target" "$SECONDS_PER_TARGET" "$runs" "$speed" "$cov" "$ft" "$corpus")")
done
echo
echo "fuzz: no crash, timeout or over-limit allocation"
printf '%s\n' "${summary[@]}"
