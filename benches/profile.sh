#!/usr/bin/env bash
# Where pgsplit's CPU goes: a `perf record` of pgsplit while pgbench runs one
# workload through its read-write port, next to the same workload through
# PgBouncer for the CPU-per-transaction comparison, in one run.
#
# Usage (as root, from anywhere):
#   benches/profile.sh                         # select-only, -M extended, 32 clients
#   WORKLOAD=mix PROTOCOL=simple benches/profile.sh
#
# Prints TPS and proxy CPU microseconds per transaction for pgsplit and
# PgBouncer, then `perf report --no-children` for pgsplit (top symbols), and
# keeps perf.data under $OUT/profile/ for `perf report -i`.
#
# Environment variables (defaults in brackets):
#   WORKLOAD   select-only | simple-update | mix [select-only]
#   PROTOCOL   simple | extended | prepared [extended]
#   CLIENTS    [32]   JOBS [2]   DURATION seconds [20]   SCALE [10]
#   POOL       pgsplit max_server_connections / PgBouncer pool size [20]
#   CONSISTENCY  pgsplit consistency mode [lsn]
#   SYSCALLS   1: instead of timing and profiling, a pass of each under
#              `strace -c` printing system calls per transaction [0]
#   WORKERS    pgsplit runtime.worker_threads [its default: one per core]
#   PGSPLIT_BIN  a pgsplit binary to use instead of building one (it must
#                carry debug symbols for a useful profile: the release
#                profile keeps them, see Cargo.toml)
#   OUT        [target/bench]
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

WORKLOAD=${WORKLOAD:-select-only}
PROTOCOL=${PROTOCOL:-extended}
CLIENTS=${CLIENTS:-32}
JOBS=${JOBS:-2}
DURATION=${DURATION:-20}
SCALE=${SCALE:-10}
POOL=${POOL:-20}
CONSISTENCY=${CONSISTENCY:-lsn}
PGSPLIT_BIN=${PGSPLIT_BIN:-}
SYSCALLS=${SYSCALLS:-0}
WORKERS=${WORKERS:-}
OUT=${OUT:-target/bench}
PORT_LOW=20000
PORT_HIGH=40000
TAKEN_PORTS=" "
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[profile.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (servers run as the postgres OS user via runuser)"
command -v perf >/dev/null || die "perf is needed (apt-get install -y linux-perf)"
case $WORKLOAD in select-only | simple-update | mix) ;; *) die "unknown WORKLOAD '$WORKLOAD'" ;; esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgsplit-profile.XXXXXX")
chmod 755 "$WORK"
declare -A PGSPLIT_PID PGSPLIT_PORT PGSPLIT_ADMIN
TESTBED_PID=""
PGBOUNCER_PID=""
cleanup() {
    for pid in "${PGSPLIT_PID[@]}"; do stop_pid "$pid" 10; done
    [[ -n $PGBOUNCER_PID ]] && stop_pid "$PGBOUNCER_PID" 10
    stop_testbed
    rm -rf "$WORK"
}
trap cleanup EXIT

build_pgsplit
PGSPLIT="$WORK/pgsplit"
cp "$PGSPLIT_BIN" "$PGSPLIT"
ensure_pgbouncer
start_testbed 2 "max_connections = 300"
log "pgbench -i -s $SCALE"
PGPASSWORD=app "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app >/dev/null 2>&1
wait_replicas 120

start_pgsplit pgsplit "[limits]
max_server_connections = $POOL
max_client_connections = 2000

[consistency]
mode = \"$CONSISTENCY\"
${WORKERS:+
[runtime]
worker_threads = $WORKERS}"
wait_pgsplit pgsplit
start_pgbouncer "$POOL" 1000

workload_args() {
    case $WORKLOAD in
    select-only) echo "-b select-only" ;;
    simple-update) echo "-b simple-update" ;;
    mix)
        printf '\\set aid random(1, 100000 * :scale)\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n' >"$WORK/read.sql"
        printf '\\set aid random(1, 100000 * :scale)\n\\set delta random(-5000, 5000)\nUPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n' >"$WORK/write.sql"
        echo "-f $WORK/read.sql@9 -f $WORK/write.sql@1"
        ;;
    esac
}

run_pgbench() {
    # run_pgbench PORT PID LABEL: TPS and CPU microseconds per transaction;
    # with SYSCALLS=1, system calls per transaction instead (under strace).
    local port=$1 pid=$2 label=$3 before after out tps txns strace_pid=""
    if [[ $SYSCALLS == 1 ]]; then
        strace -c -f -o "$WORK/strace-$label" -p "$pid" 2>/dev/null &
        strace_pid=$!
        sleep 0.5
    fi
    before=$(cpu_ticks "$pid")
    # shellcheck disable=SC2046
    out=$(PGPASSWORD=app "$PGBENCH" -n -h 127.0.0.1 -p "$port" -U app -c "$CLIENTS" -j "$JOBS" \
        -T "$DURATION" -M "$PROTOCOL" $(workload_args) app 2>&1) || {
        echo "$out" >&2
        die "$label: pgbench failed"
    }
    after=$(cpu_ticks "$pid")
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
    if [[ -n $strace_pid ]]; then
        kill -INT "$strace_pid"
        wait "$strace_pid" || true
        printf '%-10s system calls per transaction (under strace, TPS %.1f):\n' "$label" "$tps"
        # strace -c rows: % time, seconds, usecs/call, calls, [errors], name.
        awk -v txns="$txns" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" && $4 / txns >= 0.01 {
            errors = NF == 6 ? sprintf(" (%.2f failed)", $5 / txns) : ""
            printf "    %-12s %6.2f%s\n", $NF, $4 / txns, errors }' "$WORK/strace-$label"
        return
    fi
    printf '%-10s TPS %10.1f   CPU us/txn %7.1f\n' "$label" "$tps" \
        "$(bc -l <<<"($after - $before) * 1000000 / $CLK_TCK / $txns")"
}

mkdir -p "$OUT/profile"
log "cluster: $(cluster_settings); $WORKLOAD -M $PROTOCOL -c $CLIENTS -j $JOBS, ${DURATION}s"
run_pgbench "$PGBOUNCER_PORT" "$PGBOUNCER_REAL" pgbouncer
if [[ $SYSCALLS == 1 ]]; then
    run_pgbench "${PGSPLIT_PORT[pgsplit]}" "${PGSPLIT_PID[pgsplit]}" pgsplit
    exit 0
fi
log "perf record of pgsplit"
perf record -F 999 -g -o "$OUT/profile/perf.data" -p "${PGSPLIT_PID[pgsplit]}" 2>/dev/null &
PERF_PID=$!
sleep 0.5
run_pgbench "${PGSPLIT_PORT[pgsplit]}" "${PGSPLIT_PID[pgsplit]}" pgsplit
kill -INT "$PERF_PID"
wait "$PERF_PID" || true
perf report -i "$OUT/profile/perf.data" --no-children --stdio --percent-limit 0.8 2>/dev/null |
    grep -v '^$' | grep -E '^ +[0-9]' | head -60
