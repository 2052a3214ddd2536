#!/usr/bin/env bash
# pgbench comparison: direct to the primary vs through pgsplit vs through
# PgBouncer (transaction pooling), all in one run on one throw-away cluster.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/pgbench.sh                  # full run, about 9 minutes (+ build)
#   QUICK=1 benches/pgbench.sh          # sanity run, about 45 seconds (+ build)
#
# What it does:
#   1. builds pgsplit (cargo build --release) and copies the binary into a
#      work dir, so a concurrent rebuild cannot change it mid-run;
#   2. `pgsplit testbed --replicas 0` starts a PostgreSQL primary on loopback;
#      `pgbench -i -s $SCALE` initialises db `app` as user `app`, directly;
#   3. starts pgsplit (read_write port -> the primary, the only backend) and
#      PgBouncer (pool_mode = transaction, run as the `postgres` OS user,
#      installed with apt-get if missing), both with SCRAM client auth;
#   4. for every cell (workload x protocol x client count) runs pgbench against
#      the targets interleaved, direct pgsplit pgbouncer direct ..., for ROUNDS
#      rounds of DURATION seconds, so drift (autovacuum, caches, other load)
#      hits all targets alike;
#   5. per run records TPS (without initial connection time), average latency,
#      transactions, and the CPU time (user+sys, /proc/PID/stat) the proxy
#      process used during the run -> proxy CPU microseconds per transaction;
#   6. prints a table per cell plus a summary, and writes every run to
#      $OUT/pgbench.csv (pgbench outputs go to $OUT/pgbench-logs/).
#
# Environment variables (defaults in brackets):
#   DURATION          seconds per pgbench run [10]
#   ROUNDS            rounds of interleaved runs per cell [2]
#   QUICK=1           3 s x 1 round, select-only only (simple + extended, 8 and
#                     32 clients); DURATION/ROUNDS still override it
#   WORKLOADS         pgbench builtin scripts ["select-only tpcb-like"]
#   PROTOCOLS         pgbench -M values ["simple extended"]
#   CLIENTS           client counts ["8 32"]
#   JOBS              pgbench -j [2]
#   SCALE             pgbench -i -s [10]
#   TARGETS           subset/order of "direct pgsplit pgbouncer" [all three]
#   PGSPLIT_THREADS   pgsplit [runtime] worker_threads [unset: one per core]
#   PGSPLIT_BIN       use this pgsplit binary instead of building one
#   OUT               output dir for the CSV and logs [target/bench]
#   KEEP_WORK=1       keep the work dir (configs, proxy logs) after the run
#
# Reading the results: every number is only meaningful next to the others of
# the same run. On a small machine postgres, pgbench and the proxy share the
# CPUs, so a proxy's TPS also pays for the CPU it takes away from postgres and
# pgbench; "CPU us/txn" isolates the proxy's own cost. See benches/README.md.
#
# Needs root (PostgreSQL and PgBouncer run as `postgres` via runuser).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3}
    ROUNDS=${ROUNDS:-1}
    WORKLOADS=${WORKLOADS:-select-only}
else
    DURATION=${DURATION:-10}
    ROUNDS=${ROUNDS:-2}
    WORKLOADS=${WORKLOADS:-select-only tpcb-like}
fi
PROTOCOLS=${PROTOCOLS:-simple extended}
CLIENTS=${CLIENTS:-8 32}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
TARGETS=${TARGETS:-direct pgsplit pgbouncer}
PGSPLIT_THREADS=${PGSPLIT_THREADS:-}
PGSPLIT_BIN=${PGSPLIT_BIN:-}
OUT=${OUT:-target/bench}
KEEP_WORK=${KEEP_WORK:-0}

CLK_TCK=$(getconf CLK_TCK)
CSV="$OUT/pgbench.csv"
LOGS="$OUT/pgbench-logs"

log() { printf '[pgbench.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (servers run as the postgres OS user via runuser)"
id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (install postgresql)"
for t in $TARGETS; do
    case $t in direct | pgsplit | pgbouncer) ;; *) die "unknown target '$t' in TARGETS" ;; esac
done

# ---------------------------------------------------------------------------
# Cleanup: stop exactly the processes this script started, newest first.
# ---------------------------------------------------------------------------
WORK=""
TESTBED_PID=""
PROXY_PID=""
PGBOUNCER_PID=""   # the runuser wrapper
PGBOUNCER_REAL="" # pgbouncer itself (from its pidfile)

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$PROXY_PID" 10
    stop_pid "$PGBOUNCER_REAL" 10
    stop_pid "$PGBOUNCER_PID" 5
    if [[ -n $TESTBED_PID ]]; then
        # The testbed stops its servers and removes its cluster dir on SIGTERM.
        stop_pid "$TESTBED_PID" 60
        # Its initdb template is left behind by design (see the test bed crate,
        # testbed/); it is named after the testbed's pid, so remove exactly
        # that one.
        alive "$TESTBED_PID" || rm -rf "${TMPDIR:-/tmp}/pgsplit-testbed-template-$TESTBED_PID-"*
    fi
    wait 2>/dev/null
    if [[ -n $WORK && -d $WORK ]]; then
        # Keep it after a failure (logs, configs), not after Ctrl-C / SIGTERM.
        if [[ $KEEP_WORK == 1 || ($rc != 0 && $rc != 130 && $rc != 143) ]]; then
            log "work dir kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------
TAKEN_PORTS=" "
# Listen ports come from below the kernel's ephemeral range, so no outgoing
# connection (pgbench's, a proxy's) can be holding the port when we bind it.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
PORT_LOW=10000
PORT_HIGH=$((EPHEMERAL_LOW > PORT_LOW + 1000 ? EPHEMERAL_LOW - 1 : 65000))

# ---------------------------------------------------------------------------
# Build, work dir, cluster.
# ---------------------------------------------------------------------------
if [[ -z $PGSPLIT_BIN ]]; then
    log "building pgsplit (release)"
    cargo build --release --quiet
    PGSPLIT_BIN=target/release/pgsplit
fi
[[ -x $PGSPLIT_BIN ]] || die "no pgsplit binary at $PGSPLIT_BIN"

PGBOUNCER=$(command -v pgbouncer || true)
if [[ -z $PGBOUNCER && $TARGETS == *pgbouncer* ]]; then
    log "pgbouncer missing: apt-get install -y pgbouncer"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
    PGBOUNCER=$(command -v pgbouncer) || die "pgbouncer still missing"
fi

WORK=$(mktemp -d /tmp/pgsplit-bench.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/testbed" "$OUT" "$LOGS"
cp "$PGSPLIT_BIN" "$WORK/pgsplit"
PGSPLIT="$WORK/pgsplit"

log "starting the cluster (pgsplit testbed --replicas 0)"
"$PGSPLIT" testbed --dir "$WORK/testbed" --replicas 0 >"$WORK/testbed.log" 2>&1 &
TESTBED_PID=$!
for ((i = 0; i < 600; i++)); do
    [[ -s $WORK/testbed/cluster.env ]] && break
    if ! alive "$TESTBED_PID"; then
        cat "$WORK/testbed.log" >&2
        die "the testbed exited before the cluster came up"
    fi
    sleep 0.2
done
[[ -s $WORK/testbed/cluster.env ]] || die "no cluster.env after 120s"
sleep 0.2 # the file is written in one go, but be kind to slow disks
# shellcheck disable=SC1091
source "$WORK/testbed/cluster.env"
PGBENCH="$PG_BIN/pgbench"
PSQL="$PG_BIN/psql"
[[ -x $PGBENCH ]] || PGBENCH=$(command -v pgbench)
[[ -x $PSQL ]] || PSQL=$(command -v psql)
TAKEN_PORTS+="$PRIMARY_PORT "
log "primary on 127.0.0.1:$PRIMARY_PORT ($CLUSTER_DIR)"

log "pgbench -i -s $SCALE (directly on the primary)"
PGPASSWORD=app "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app \
    >"$WORK/pgbench-init.log" 2>&1 || {
    cat "$WORK/pgbench-init.log" >&2
    die "pgbench -i failed"
}

# ---------------------------------------------------------------------------
# pgsplit.
# ---------------------------------------------------------------------------
free_port PROXY_PORT
free_port PGSPLIT_RO_PORT
free_port PGSPLIT_ADMIN_PORT
{
    cat <<EOF
[listen]
read_write = "127.0.0.1:$PROXY_PORT"
read_only = "127.0.0.1:$PGSPLIT_RO_PORT"
admin = "127.0.0.1:$PGSPLIT_ADMIN_PORT"

[[backends]]
name = "pg1"
address = "127.0.0.1:$PRIMARY_PORT"

[[users]]
name = "app"
password = "app"
EOF
    if [[ -n $PGSPLIT_THREADS ]]; then
        printf '\n[runtime]\nworker_threads = %s\n' "$PGSPLIT_THREADS"
    fi
} >"$WORK/pgsplit.toml"

if [[ $TARGETS == *pgsplit* ]]; then
    log "starting pgsplit on 127.0.0.1:$PROXY_PORT (worker_threads ${PGSPLIT_THREADS:-default})"
    "$PGSPLIT" --config "$WORK/pgsplit.toml" >"$WORK/pgsplit.log" 2>&1 &
    PROXY_PID=$!
    wait_sql pgsplit "$PROXY_PORT" 30
fi

# ---------------------------------------------------------------------------
# PgBouncer: refuses to run as root, so it runs as postgres from a dir it owns.
# ---------------------------------------------------------------------------
free_port PGBOUNCER_PORT
PB="$WORK/pgbouncer"
mkdir -p "$PB"
cat >"$PB/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $PB/userlist.txt
pool_mode = transaction
default_pool_size = 40
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
server_tls_sslmode = disable
client_tls_sslmode = disable
logfile = $PB/pgbouncer.log
pidfile = $PB/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 3600
EOF
printf '"app" "app"\n' >"$PB/userlist.txt"
chown -R postgres: "$PB"
chmod 600 "$PB/userlist.txt"

if [[ $TARGETS == *pgbouncer* ]]; then
    log "starting PgBouncer $("$PGBOUNCER" --version | head -1 | awk '{print $2}') on 127.0.0.1:$PGBOUNCER_PORT"
    runuser -u postgres -- "$PGBOUNCER" "$PB/pgbouncer.ini" >"$PB/stderr.log" 2>&1 &
    PGBOUNCER_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $PB/pgbouncer.pid ]] && break
        alive "$PGBOUNCER_PID" || {
            cat "$PB/stderr.log" "$PB/pgbouncer.log" >&2 2>/dev/null
            die "pgbouncer exited"
        }
        sleep 0.1
    done
    PGBOUNCER_REAL=$(tr -dc 0-9 <"$PB/pgbouncer.pid")
    alive "$PGBOUNCER_REAL" || die "no pgbouncer pid"
    wait_sql pgbouncer "$PGBOUNCER_PORT" 30
fi

# ---------------------------------------------------------------------------
# The runs.
# ---------------------------------------------------------------------------
port_of() {
    case $1 in
    direct) echo "$PRIMARY_PORT" ;;
    pgsplit) echo "$PROXY_PORT" ;;
    pgbouncer) echo "$PGBOUNCER_PORT" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "" ;;
    pgsplit) echo "$PROXY_PID" ;;
    pgbouncer) echo "$PGBOUNCER_REAL" ;;
    esac
}

echo "workload,protocol,clients,round,target,duration_s,tps,latency_ms,conn_ms,transactions,failed_txns,proxy_cpu_s,proxy_cpu_us_per_txn,status" >"$CSV"

FAILED_RUNS=0
run_one() {
    # run_one WORKLOAD PROTOCOL CLIENTS ROUND TARGET: one pgbench run, one CSV row.
    local wl=$1 proto=$2 clients=$3 round=$4 target=$5
    local port pid before=0 after=0 rc=0 logf tps lat conn txns failed cpu_s cpu_us status
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    logf="$LOGS/${wl}-${proto}-c${clients}-r${round}-${target}.log"
    if [[ $wl == tpcb-like ]]; then
        # What pgbench's own pre-run vacuum does, done directly and outside the
        # measurement so every target starts from the same state.
        "$PSQL" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d app \
            -c 'VACUUM pgbench_branches' -c 'VACUUM pgbench_tellers' \
            -c 'TRUNCATE pgbench_history' >/dev/null
    fi
    if [[ -n $pid ]]; then
        alive "$pid" || die "$target (pid $pid) is gone; see $WORK"
        before=$(cpu_ticks "$pid")
    fi
    PGPASSWORD=app "$PGBENCH" -n -b "$wl" -M "$proto" -c "$clients" -j "$JOBS" -T "$DURATION" \
        -h 127.0.0.1 -p "$port" -U app app >"$logf" 2>&1 || rc=$?
    if [[ -n $pid ]]; then
        after=$(cpu_ticks "$pid")
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$logf")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$logf")
    conn=$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$logf")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$logf")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$logf")
    failed=${failed:-0}
    status=ok
    if [[ $rc != 0 || -z $tps || -z $txns || $txns == 0 ]]; then
        status="failed(rc=$rc)"
        FAILED_RUNS=$((FAILED_RUNS + 1))
        log "pgbench against $target failed (rc=$rc); last lines of $logf:"
        tail -5 "$logf" >&2
    fi
    if [[ -n $pid && -n $txns && $txns != 0 ]]; then
        cpu_s=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
        cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    else
        cpu_s="" cpu_us=""
    fi
    echo "$wl,$proto,$clients,$round,$target,$DURATION,${tps:-},${lat:-},${conn:-},${txns:-},$failed,$cpu_s,$cpu_us,$status" >>"$CSV"
    log "  $(printf '%-9s round %d: tps %10s  lat %7s ms  proxy cpu %6s us/txn  %s' \
        "$target" "$round" "${tps:--}" "${lat:--}" "${cpu_us:--}" "$status")"
}

# Prints the table for one cell from the CSV.
print_cell() {
    local wl=$1 proto=$2 clients=$3
    awk -F, -v wl="$wl" -v proto="$proto" -v c="$clients" -v rounds="$ROUNDS" -v dur="$DURATION" '
        NR > 1 && $1 == wl && $2 == proto && $3 == c && $14 == "ok" {
            if (!($5 in n)) order[++k] = $5
            n[$5]++; tps[$5] += $7; lat[$5] += $8; txn[$5] += $10
            if ($12 != "") { cpu[$5] += $12; cpun[$5] += $10 }
        }
        END {
            printf "\n%s, -M %s, %d clients (%d x %d s)\n", wl, proto, c, rounds, dur
            printf "  %-10s %11s %9s %12s %10s %13s\n", "target", "TPS", "lat ms", "CPU us/txn", "vs direct", "vs pgbouncer"
            for (i = 1; i <= k; i++) { t = order[i]; mt[t] = tps[t] / n[t] }
            for (i = 1; i <= k; i++) {
                t = order[i]
                us = (t in cpun) ? sprintf("%.1f", cpu[t] * 1e6 / cpun[t]) : "-"
                vd = ("direct" in mt) ? sprintf("%.3f", mt[t] / mt["direct"]) : "-"
                vb = ("pgbouncer" in mt) ? sprintf("%.3f", mt[t] / mt["pgbouncer"]) : "-"
                printf "  %-10s %11.1f %9.3f %12s %10s %13s\n", t, mt[t], lat[t] / n[t], us, vd, vb
            }
            if (("pgsplit" in cpun) && ("pgbouncer" in cpun) && cpu["pgbouncer"] > 0)
                printf "  proxy CPU per txn, pgsplit / pgbouncer: %.2f\n",
                    (cpu["pgsplit"] / cpun["pgsplit"]) / (cpu["pgbouncer"] / cpun["pgbouncer"])
        }' "$CSV"
}

print_summary() {
    awk -F, '
        NR > 1 && $14 == "ok" {
            cell = $1 " " $2 " c" $3
            if (!(cell in seen)) { seen[cell] = 1; cells[++k] = cell }
            key = cell SUBSEP $5
            n[key]++; tps[key] += $7
            if ($12 != "") { cpu[key] += $12; txn[key] += $10 }
        }
        function m(c, t) { return (c SUBSEP t) in n ? tps[c SUBSEP t] / n[c SUBSEP t] : 0 }
        function us(c, t) { return txn[c SUBSEP t] > 0 ? cpu[c SUBSEP t] * 1e6 / txn[c SUBSEP t] : 0 }
        function r(a, b) { return (a > 0 && b > 0) ? sprintf("%.3f", a / b) : "-" }
        function f(x) { return x > 0 ? sprintf("%.1f", x) : "-" }
        END {
            printf "\nSummary (TPS means; CPU = proxy process us per transaction)\n"
            printf "  %-28s %9s %9s %9s %10s %10s %8s %8s %8s\n", "cell", "direct", "pgsplit", "pgbouncer",
                "split/dir", "split/pgb", "CPUsplit", "CPUpgb", "CPU s/b"
            for (i = 1; i <= k; i++) {
                c = cells[i]
                d = m(c, "direct"); s = m(c, "pgsplit"); b = m(c, "pgbouncer")
                printf "  %-28s %9s %9s %9s %10s %10s %8s %8s %8s\n", c, f(d), f(s), f(b),
                    r(s, d), r(s, b), f(us(c, "pgsplit")), f(us(c, "pgbouncer")),
                    r(us(c, "pgsplit"), us(c, "pgbouncer"))
            }
        }' "$CSV"
}

ncells=0
for wl in $WORKLOADS; do for proto in $PROTOCOLS; do for c in $CLIENTS; do ncells=$((ncells + 1)); done; done; done
nt=$(wc -w <<<"$TARGETS")
log "$ncells cells x $nt targets x $ROUNDS rounds x ${DURATION}s ≈ $((ncells * nt * ROUNDS * (DURATION + 1) / 60 + 1)) min"

TABLES=""
for wl in $WORKLOADS; do
    for proto in $PROTOCOLS; do
        for c in $CLIENTS; do
            log "cell: $wl -M $proto -c $c -j $JOBS"
            for ((round = 1; round <= ROUNDS; round++)); do
                for target in $TARGETS; do
                    run_one "$wl" "$proto" "$c" "$round" "$target"
                done
            done
            table=$(print_cell "$wl" "$proto" "$c")
            printf '%s\n' "$table"
            TABLES+="$table"$'\n'
        done
    done
done

echo
echo "=================================================================="
echo "pgbench comparison: $(nproc) CPUs, scale $SCALE, -j $JOBS, $ROUNDS x ${DURATION}s per target and cell"
echo "pgsplit worker_threads: ${PGSPLIT_THREADS:-default}; PgBouncer pool_mode=transaction"
printf '%s' "$TABLES"
print_summary
echo
echo "raw results: $CSV"
if ((FAILED_RUNS > 0)); then
    die "$FAILED_RUNS run(s) failed; see $LOGS"
fi
