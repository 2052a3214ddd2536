#!/usr/bin/env bash
# Transaction pooling benchmark: what pgsplit's pool does with many clients
# and few server connections, next to PgBouncer, in one run.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/pool.sh                     # full run, about 11 minutes (+ build)
#   QUICK=1 benches/pool.sh             # smoke run, about 1.5 minutes (+ build)
#
# What it does:
#   1. builds pgsplit (cargo build --release) and copies the binary into a
#      work dir, so a concurrent rebuild cannot change it mid-run;
#   2. `pgsplit testbed --replicas 2` starts a primary and two streaming
#      replicas on loopback (max_connections raised so CLIENTS direct clients
#      fit; FSYNC / SYNC_COMMIT as postgresql.conf lines on every node when
#      set); `pgbench -i -s $SCALE` initialises db `app` as user `app` on the
#      primary; waits until both replicas have replayed it;
#   3. starts two pgsplit processes, all three nodes as backends, SCRAM client
#      auth, `[pool] mode = "transaction"`, `max_server_connections = POOL`
#      per backend: `pgsplit` (consistency lsn, the default) and `pgsplit-off`
#      (consistency off); and PgBouncer (pool_mode = transaction,
#      default_pool_size = POOL, everything to the primary, run as the
#      `postgres` OS user, installed with apt-get if missing);
#   4. idle clients: benches/idle_clients.py opens IDLE_CLIENTS connections
#      to pgsplit's read-write port, then to PgBouncer, and reports how many
#      logged in, the proxy's VmRSS before and with them all idle (-> KiB per
#      idle client), the server connections on every node (pg_stat_activity),
#      then has BURST of them send one statement at the same moment and
#      reports how many succeeded and the wall time;
#   5. throughput: for every cell (workload x protocol x client count) runs
#      pgbench against the targets interleaved (direct pgsplit pgsplit-off
#      pgbouncer direct ...) for ROUNDS rounds of DURATION seconds, recording
#      TPS, failed transactions and aborted clients, proxy CPU per
#      transaction (user+sys from /proc/PID/stat) and, for pgsplit, the share
#      of statements replicas served and pool waits (deltas of /metrics);
#   6. prints (stdout) the cluster settings, the idle-client table, a table
#      per cell and a summary (each table also goes to stderr as soon as it
#      is known, with the progress log); writes $OUT/pool-idle.csv and
#      $OUT/pool.csv (pgbench outputs and driver logs go to $OUT/pool-logs/).
#
# Workloads: `select-only` (pgbench -b select-only: one point SELECT),
# `simple-update` (-b simple-update, i.e. -N: BEGIN; UPDATE; SELECT; INSERT;
# END) and `mix` (-f read.sql@9 -f write.sql@1: autocommit point SELECT /
# point UPDATE, as in split.sh).
#
# Environment variables (defaults in brackets):
#   IDLE_CLIENTS      idle clients per proxy [10000; QUICK 2000]; 0 skips part 4
#   BURST             of those, clients that run one statement at once [1000]
#   BURST_SQL         the statement; {n} becomes the client's number
#                     ["SELECT abalance FROM pgbench_accounts WHERE aid = {n}"]
#   IDLE_TARGETS      ["pgsplit pgbouncer"]
#   CONNECT_CONCURRENCY  logins in flight at once in the driver [100]
#   DURATION          seconds per pgbench run [10; QUICK 3]
#   ROUNDS            rounds of interleaved runs per cell [1]
#   WORKLOADS         ["select-only simple-update mix"]
#   PROTOCOLS         pgbench -M values ["simple extended"; QUICK "extended"];
#                     "prepared" adds rows (PgBouncer's are n/a: 1.18 cannot
#                     keep prepared statements in transaction mode)
#   CLIENTS           pgbench -c values ["32 256"; QUICK "32"]
#   JOBS              pgbench -j [2]
#   SCALE             pgbench -i -s [10]
#   TARGETS           subset/order of "direct pgsplit pgsplit-off pgbouncer" [all]
#   POOL              pgsplit max_server_connections (per backend) and
#                     PgBouncer default_pool_size [20]
#   FSYNC             on|off for every node [unset: the testbed's, off]
#   SYNC_COMMIT       on|off for every node [unset: the testbed's, on]
#   PGSPLIT_THREADS   pgsplit [runtime] worker_threads [unset: one per core]
#   PGSPLIT_BIN       use this pgsplit binary instead of building one
#   PYTHON            interpreter for idle_clients.py [python3]
#   OUT               output dir for the CSVs and logs [target/bench]
#   KEEP_WORK=1       keep the work dir (configs, proxy logs) after the run
#
# Reading the results: every number is only meaningful next to the others of
# the same run. On a small machine the three PostgreSQL servers, pgbench (or
# the driver) and the proxy share the CPUs. See benches/README.md.
#
# Needs root (PostgreSQL and PgBouncer run as `postgres` via runuser).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    IDLE_CLIENTS=${IDLE_CLIENTS:-2000}
    DURATION=${DURATION:-3}
    PROTOCOLS=${PROTOCOLS:-extended}
    CLIENTS=${CLIENTS:-32}
else
    IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
    DURATION=${DURATION:-10}
    PROTOCOLS=${PROTOCOLS:-simple extended}
    CLIENTS=${CLIENTS:-32 256}
fi
BURST=${BURST:-1000}
BURST_SQL=${BURST_SQL:-'SELECT abalance FROM pgbench_accounts WHERE aid = {n}'}
IDLE_TARGETS=${IDLE_TARGETS:-pgsplit pgbouncer}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-100}
ROUNDS=${ROUNDS:-1}
WORKLOADS=${WORKLOADS:-select-only simple-update mix}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
TARGETS=${TARGETS:-direct pgsplit pgsplit-off pgbouncer}
POOL=${POOL:-20}
FSYNC=${FSYNC:-}
SYNC_COMMIT=${SYNC_COMMIT:-}
PGSPLIT_THREADS=${PGSPLIT_THREADS:-}
PGSPLIT_BIN=${PGSPLIT_BIN:-}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-target/bench}
KEEP_WORK=${KEEP_WORK:-0}

CLK_TCK=$(getconf CLK_TCK)
CSV="$OUT/pool.csv"
IDLE_CSV="$OUT/pool-idle.csv"
LOGS="$OUT/pool-logs"

log() { printf '[pool.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (servers run as the postgres OS user via runuser)"
id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (install postgresql)"
for t in $TARGETS; do
    case $t in direct | pgsplit | pgsplit-off | pgbouncer) ;; *) die "unknown target '$t' in TARGETS" ;; esac
done
for t in $IDLE_TARGETS; do
    case $t in pgsplit | pgbouncer) ;; *) die "unknown target '$t' in IDLE_TARGETS" ;; esac
done
for w in $WORKLOADS; do
    case $w in select-only | simple-update | mix) ;; *) die "unknown workload '$w' in WORKLOADS" ;; esac
done
for p in $PROTOCOLS; do
    case $p in simple | extended | prepared) ;; *) die "unknown protocol '$p' in PROTOCOLS" ;; esac
done
for n in $CLIENTS $DURATION $ROUNDS $JOBS $SCALE $POOL $IDLE_CLIENTS $BURST $CONNECT_CONCURRENCY; do
    [[ $n =~ ^[0-9]+$ ]] || die "not a number: '$n'"
done
for v in "$FSYNC" "$SYNC_COMMIT"; do
    case $v in "" | on | off) ;; *) die "FSYNC and SYNC_COMMIT take on or off, not '$v'" ;; esac
done
command -v curl >/dev/null || die "curl is needed to read pgsplit's /metrics"
if ((IDLE_CLIENTS > 0)); then
    "$PYTHON" -c 'import asyncio' 2>/dev/null || die "no usable $PYTHON for idle_clients.py"
fi

is_pgsplit() { [[ $1 == pgsplit || $1 == pgsplit-* ]]; }

# Every proxy and the driver need a descriptor per client: raise the soft
# limit to the hard one (pgsplit also raises its own; PgBouncer and the driver
# inherit this one).
ulimit -n "$(ulimit -Hn)"
if ((IDLE_CLIENTS + 300 > $(ulimit -n))); then
    die "IDLE_CLIENTS=$IDLE_CLIENTS needs more open files than the hard limit $(ulimit -Hn)"
fi

# ---------------------------------------------------------------------------
# Cleanup: stop exactly the processes this script started, newest first.
# ---------------------------------------------------------------------------
WORK=""
TESTBED_PID=""
declare -A PGSPLIT_PID=()   # target -> pid
declare -A PGSPLIT_PORT=()  # target -> read-write port
declare -A PGSPLIT_ADMIN=() # target -> admin port
PGBOUNCER_PID=""
PGBOUNCER_REAL=""
DRIVER_PID=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$DRIVER_PID" 5
    stop_started
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

TAKEN_PORTS=" "
# Listen ports come from below the kernel's ephemeral range, so no outgoing
# connection (pgbench's, a proxy's) can be holding the port when we bind it.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
PORT_LOW=10000
PORT_HIGH=$((EPHEMERAL_LOW > PORT_LOW + 1000 ? EPHEMERAL_LOW - 1 : 65000))

# ---------------------------------------------------------------------------
# Build, work dir, cluster.
# ---------------------------------------------------------------------------
build_pgsplit
[[ $TARGETS$IDLE_TARGETS == *pgbouncer* ]] && ensure_pgbouncer

WORK=$(mktemp -d /tmp/pgsplit-bench-pool.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$OUT" "$LOGS"
cp "$PGSPLIT_BIN" "$WORK/pgsplit"
PGSPLIT="$WORK/pgsplit"

# Direct runs need CLIENTS connections on the primary next to the pgsplit
# pools (POOL per process), PgBouncer's pool, probes and superuser slots.
max_clients=0
for c in $CLIENTS; do ((c > max_clients)) && max_clients=$c; done
MAX_CONNECTIONS=$((max_clients + 4 * POOL + 100))
((MAX_CONNECTIONS < 300)) && MAX_CONNECTIONS=300
conf=("max_connections = $MAX_CONNECTIONS")
[[ -n $FSYNC ]] && conf+=("fsync = $FSYNC")
[[ -n $SYNC_COMMIT ]] && conf+=("synchronous_commit = $SYNC_COMMIT")

log "starting the cluster (pgsplit testbed --replicas 2; ${conf[*]})"
start_testbed 2 "${conf[@]}"
log "primary on 127.0.0.1:$PRIMARY_PORT, replicas on $REPLICA_PORTS ($CLUSTER_DIR)"
SETTINGS=$(cluster_settings)
for port in $REPLICA_PORTS; do
    [[ $(psql_pg "$port" 'SHOW fsync') == $(psql_pg "$PRIMARY_PORT" 'SHOW fsync') ]] ||
        die "fsync differs between nodes"
done
FSYNC_NOW=$(psql_pg "$PRIMARY_PORT" 'SHOW fsync')
SYNC_NOW=$(psql_pg "$PRIMARY_PORT" 'SHOW synchronous_commit')
log "cluster settings: $SETTINGS"

log "pgbench -i -s $SCALE (directly on the primary)"
PGPASSWORD=app "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app \
    >"$WORK/pgbench-init.log" 2>&1 || {
    cat "$WORK/pgbench-init.log" >&2
    die "pgbench -i failed"
}
log "waiting for the replicas to replay the initial load"
wait_replicas 120

cat >"$WORK/read.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
EOF
cat >"$WORK/write.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
EOF

# ---------------------------------------------------------------------------
# The proxies.
# ---------------------------------------------------------------------------
MAX_CLIENT_CONN=$((IDLE_CLIENTS + max_clients + 100))
pgsplit_extra() {
    # The TOML a pgsplit target adds to the common configuration.
    printf '[limits]\nmax_server_connections = %s\nmax_client_connections = %s\n' "$POOL" "$MAX_CLIENT_CONN"
    printf '\n[pool]\nmode = "transaction"\n'
    case $1 in
    pgsplit) printf '\n[consistency]\nmode = "lsn"\n' ;;
    pgsplit-off) printf '\n[consistency]\nmode = "off"\n' ;;
    esac
    [[ -z $PGSPLIT_THREADS ]] || printf '\n[runtime]\nworker_threads = %s\n' "$PGSPLIT_THREADS"
}
for target in pgsplit pgsplit-off; do
    [[ " $TARGETS $IDLE_TARGETS " == *" $target "* ]] || continue
    start_pgsplit "$target" "$(pgsplit_extra "$target")"
done
for target in "${!PGSPLIT_PID[@]}"; do
    wait_pgsplit "$target"
done
if [[ " $TARGETS $IDLE_TARGETS " == *" pgbouncer "* ]]; then
    start_pgbouncer "$POOL" "$MAX_CLIENT_CONN"
fi

port_of() {
    case $1 in
    direct) echo "$PRIMARY_PORT" ;;
    pgbouncer) echo "$PGBOUNCER_PORT" ;;
    *) echo "${PGSPLIT_PORT[$1]}" ;;
    esac
}
pid_of() {
    case $1 in
    direct) echo "" ;;
    pgbouncer) echo "$PGBOUNCER_REAL" ;;
    *) echo "${PGSPLIT_PID[$1]}" ;;
    esac
}

# ---------------------------------------------------------------------------
# Part 1: idle clients.
# ---------------------------------------------------------------------------
IDLE_HEADER="fsync,synchronous_commit,target,pool,clients_wanted,connected,connect_failed,connect_s"
IDLE_HEADER+=",rss_before_kib,rss_idle_kib,kib_per_client,server_conns_before,server_conns_idle"
IDLE_HEADER+=",burst_clients,burst_ok,burst_failed,burst_s,rss_after_burst_kib,server_conns_after_burst"
IDLE_HEADER+=",login_internal_queries,login_pool_waits,burst_statements,burst_pool_waits,burst_internal_queries"
echo "$IDLE_HEADER" >"$IDLE_CSV"

idle_run() {
    # idle_run TARGET: one driver run, one row of pool-idle.csv.
    local target=$1
    local port pid out="$LOGS/idle-$target.out" rc=0 metrics=()
    local -A r=()
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    is_pgsplit "$target" && metrics=(--metrics-url "http://127.0.0.1:${PGSPLIT_ADMIN[$target]}/metrics")
    alive "$pid" || die "$target (pid $pid) is gone; see $WORK"
    log "idle clients: $IDLE_CLIENTS to $target (port $port), then $BURST statements at once"
    "$PYTHON" "$REPO/benches/idle_clients.py" --label "$target" --port "$port" --pid "$pid" \
        --node-ports "$NODE_PORTS" --clients "$IDLE_CLIENTS" --burst "$BURST" \
        --concurrency "$CONNECT_CONCURRENCY" --sql "$BURST_SQL" "${metrics[@]}" \
        >"$out" 2> >(tee "$LOGS/idle-$target.err" >&2) &
    DRIVER_PID=$!
    wait "$DRIVER_PID" || rc=$?
    DRIVER_PID=""
    ((rc == 0)) || die "idle_clients.py against $target failed (rc=$rc); see $LOGS/idle-$target.err"
    while IFS='=' read -r k v; do r[$k]=$v; done <"$out"
    r[kib_per_client]=$(awk -v a="${r[rss_idle_kib]}" -v b="${r[rss_before_kib]}" -v n="${r[connected]}" \
        'BEGIN { if (n > 0) printf "%.2f", (a - b) / n }')
    echo "$FSYNC_NOW,$SYNC_NOW,$target,$POOL,${r[clients_wanted]},${r[connected]},${r[connect_failed]},${r[connect_s]},${r[rss_before_kib]},${r[rss_idle_kib]},${r[kib_per_client]},${r[server_conns_before]},${r[server_conns_idle]},${r[burst_clients]},${r[burst_ok]},${r[burst_failed]},${r[burst_s]},${r[rss_after_burst_kib]},${r[server_conns_after_burst]},${r[login_internal_queries]:-},${r[login_pool_waits]:-},${r[burst_statements]:-},${r[burst_pool_waits]:-},${r[burst_internal_queries]:-}" >>"$IDLE_CSV"
    log "  $target: ${r[connected]}/${r[clients_wanted]} connected in ${r[connect_s]} s, RSS ${r[rss_before_kib]} -> ${r[rss_idle_kib]} KiB (${r[kib_per_client]} KiB/client), burst ${r[burst_ok]}/${r[burst_clients]} ok in ${r[burst_s]} s"
}

print_idle() {
    awk -F, '
        NR > 1 {
            rows[++k] = $0
            kib[$3] = $11
        }
        END {
            if (k == 0) exit
            printf "\nIdle clients (read-write port for pgsplit; server connections = client backends of app on db app,\n"
            printf "per node primary/replica/replica, from pg_stat_activity)\n"
            printf "  %-10s %6s %8s %8s %10s %10s %8s %12s %12s %12s %11s %9s %12s\n", "target", "pool", "wanted",
                "connected", "login s", "RSS KiB", "+KiB", "KiB/client", "srv before", "srv idle", "burst ok", "burst s",
                "srv after"
            for (i = 1; i <= k; i++) {
                split(rows[i], f, ",")
                printf "  %-10s %6s %8s %8s %10s %10s %8s %12s %12s %12s %11s %9s %12s\n", f[3], f[4], f[5], f[6], f[8],
                    f[9] "->" f[10], f[10] - f[9], f[11], f[12], f[13], f[15] "/" f[14], f[17], f[19]
            }
            if (("pgsplit" in kib) && ("pgbouncer" in kib) && kib["pgbouncer"] > 0)
                printf "  KiB per idle client, pgsplit / PgBouncer: %.2f\n", kib["pgsplit"] / kib["pgbouncer"]
            for (i = 1; i <= k; i++) {
                split(rows[i], f, ",")
                if (f[20] == "") continue
                printf "  %s /metrics deltas: logins: internal queries %s, pool waits %s; burst: statements %s, pool waits %s, internal queries %s\n",
                    f[3], f[20], f[21], f[22], f[23], f[24]
            }
        }' "$IDLE_CSV"
}

if ((IDLE_CLIENTS > 0)); then
    for target in $IDLE_TARGETS; do
        idle_run "$target"
    done
fi
IDLE_TABLE=$(print_idle)
printf '%s\n' "$IDLE_TABLE" >&2

# ---------------------------------------------------------------------------
# Part 2: throughput.
# ---------------------------------------------------------------------------
CSV_HEADER="fsync,synchronous_commit,workload,protocol,clients,round,target,duration_s,tps,latency_ms"
CSV_HEADER+=",conn_ms,transactions,failed_txns,aborted_clients,proxy_cpu_s,proxy_cpu_us_per_txn"
CSV_HEADER+=",statements,replica_statements,replica_share,pool_waits,pool_wait_ms,status"
echo "$CSV_HEADER" >"$CSV"

workload_args() {
    case $1 in
    select-only) echo "-b select-only" ;;
    simple-update) echo "-b simple-update" ;;
    mix) echo "-s $SCALE -f $WORK/read.sql@9 -f $WORK/write.sql@1" ;;
    esac
}

FAILED_RUNS=0
run_one() {
    # run_one WORKLOAD PROTOCOL CLIENTS ROUND TARGET: one pgbench run, one CSV row.
    local wl=$1 proto=$2 clients=$3 round=$4 target=$5
    local port pid before=0 after=0 rc=0 logf cpu_s="" cpu_us="" status
    local stmts="" repl="" share="" waits="" wait_ms=""
    local mb="$WORK/metrics-before.txt" ma="$WORK/metrics-after.txt"
    local row="$FSYNC_NOW,$SYNC_NOW,$wl,$proto,$clients,$round,$target,$DURATION"
    if [[ $target == pgbouncer && $proto == prepared ]]; then
        echo "$row,,,,,,,,,,,,,,n/a" >>"$CSV"
        log "  $(printf '%-12s round %d: n/a (PgBouncer 1.18 keeps no prepared statements in transaction mode)' "$target" "$round")"
        return
    fi
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    logf="$LOGS/$wl-$proto-c$clients-r$round-$target.log"
    wait_replicas 60
    if [[ -n $pid ]]; then
        alive "$pid" || die "$target (pid $pid) is gone; see $WORK"
    fi
    is_pgsplit "$target" && scrape "$target" "$mb"
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    # shellcheck disable=SC2046 # workload_args is a word list on purpose
    PGPASSWORD=app "$PGBENCH" -n -M "$proto" -c "$clients" -j "$JOBS" -T "$DURATION" \
        $(workload_args "$wl") -h 127.0.0.1 -p "$port" -U app app >"$logf" 2>&1 || rc=$?
    [[ -n $pid ]] && after=$(cpu_ticks "$pid")
    if is_pgsplit "$target"; then
        scrape "$target" "$ma"
        stmts=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write)
        repl=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write target=replica)
        share=$(awk -v r="$repl" -v s="$stmts" 'BEGIN { if (s > 0) printf "%.4f", r / s }')
        waits=$(metric_delta "$mb" "$ma" pgsplit_pool_wait_seconds_count)
        wait_ms=$(awk -v t="$(metric_delta "$mb" "$ma" pgsplit_pool_wait_seconds_sum)" -v n="$waits" \
            'BEGIN { if (n > 0) printf "%.3f", t * 1000 / n }')
    fi
    pgbench_result "$logf"
    status=ok
    if [[ $rc != 0 || -z $PB_TPS || -z $PB_TXNS || $PB_TXNS == 0 || $PB_FAILED != 0 || $PB_ABORTED != 0 ]]; then
        status="failed(rc=$rc)"
        FAILED_RUNS=$((FAILED_RUNS + 1))
        log "pgbench against $target failed (rc=$rc, failed txns $PB_FAILED, aborted clients $PB_ABORTED); last lines of $logf:"
        tail -5 "$logf" >&2
    fi
    if [[ -n $pid && -n $PB_TXNS && $PB_TXNS != 0 ]]; then
        cpu_s=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
        cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$PB_TXNS" \
            'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    fi
    echo "$row,${PB_TPS:-},${PB_LAT:-},${PB_CONN:-},${PB_TXNS:-},$PB_FAILED,$PB_ABORTED,$cpu_s,$cpu_us,$stmts,$repl,$share,$waits,$wait_ms,$status" >>"$CSV"
    local extra=""
    is_pgsplit "$target" && extra=$(awk -v s="$share" -v w="$waits" \
        'BEGIN { printf "  replica %5.1f%%  pool waits %d", s * 100, w }')
    log "  $(printf '%-12s round %d: tps %9s  lat %7s ms  proxy cpu %6s us/txn  failed %s aborted %s%s  %s' \
        "$target" "$round" "${PB_TPS:--}" "${PB_LAT:--}" "${cpu_us:--}" "$PB_FAILED" "$PB_ABORTED" "$extra" "$status")"
}

print_cell() {
    # print_cell WORKLOAD PROTOCOL CLIENTS: the table for one cell, from the CSV.
    awk -F, -v wl="$1" -v proto="$2" -v c="$3" -v rounds="$ROUNDS" -v dur="$DURATION" '
        NR > 1 && $3 == wl && $4 == proto && $5 == c {
            t = $7
            if (!(t in n)) { order[++k] = t; n[t] = 0 }
            if ($22 == "n/a") { na[t] = 1; next }
            fl[t] += $13; ab[t] += $14
            if ($22 != "ok") { bad[t]++; next }
            n[t]++; tps[t] += $9; lat[t] += $10; txn[t] += $12
            if ($15 != "") { cpu[t] += $15; cpun[t] += $12 }
            if ($17 != "") { st[t] += $17; rs[t] += $18; wt[t] += $20; wms[t] += $20 * $21; sp[t] = 1 }
        }
        END {
            printf "\n%s, -M %s, %d clients (%d x %d s)\n", wl, proto, c, rounds, dur
            printf "  %-12s %9s %8s %7s %7s %7s %7s %8s %9s %11s\n", "target", "TPS", "lat ms", "vs dir",
                "vs pgb", "failed", "aborted", "CPU us", "replica%", "pool waits"
            for (i = 1; i <= k; i++) { t = order[i]; if (n[t] > 0) mt[t] = tps[t] / n[t] }
            for (i = 1; i <= k; i++) {
                t = order[i]
                if (t in na) {
                    printf "  %-12s %9s  (PgBouncer 1.18: no prepared statements in transaction mode)\n", t, "n/a"
                    continue
                }
                if (n[t] == 0) { printf "  %-12s %9s %8s %7s %7s %7d %7d\n", t, "failed", "-", "-", "-", fl[t], ab[t]; continue }
                us = (cpun[t] > 0) ? sprintf("%.1f", cpu[t] * 1e6 / cpun[t]) : "-"
                vd = ("direct" in mt) ? sprintf("%.3f", mt[t] / mt["direct"]) : "-"
                vb = ("pgbouncer" in mt) ? sprintf("%.3f", mt[t] / mt["pgbouncer"]) : "-"
                share = (t in sp && st[t] > 0) ? sprintf("%.1f", rs[t] * 100 / st[t]) : "-"
                waits = (t in sp) ? sprintf("%d", wt[t]) : "-"
                printf "  %-12s %9.1f %8.3f %7s %7s %7d %7d %8s %9s %11s\n", t, mt[t], lat[t] / n[t], vd, vb,
                    fl[t], ab[t], us, share, waits
            }
        }' "$CSV"
}

print_summary() {
    awk -F, -v targets="$TARGETS" '
        BEGIN { nt = split(targets, tl, " ") }
        NR > 1 && $22 == "ok" {
            cell = sprintf("%-13s -M %-8s c%s", $3, $4, $5)
            if (!(cell in seen)) { seen[cell] = 1; cells[++k] = cell }
            key = cell SUBSEP $7
            n[key]++; tps[key] += $9
            if ($15 != "") { cpu[key] += $15; txn[key] += $12 }
            pk = $3 SUBSEP $5 SUBSEP $4; ptps[pk] += $9; pn[pk]++
            if ($7 == "pgsplit") { wl[$3] = 1; cl[$5] = 1 }
        }
        NR > 1 && $22 == "n/a" { cell = sprintf("%-13s -M %-8s c%s", $3, $4, $5); na[cell SUBSEP $7] = 1 }
        function m(c, t) { return (c SUBSEP t) in n ? tps[c SUBSEP t] / n[c SUBSEP t] : 0 }
        function us(c, t) { return txn[c SUBSEP t] > 0 ? cpu[c SUBSEP t] * 1e6 / txn[c SUBSEP t] : 0 }
        function r(a, b) { return (a > 0 && b > 0) ? sprintf("%.3f", a / b) : "-" }
        function f(c, t, x) { return x > 0 ? sprintf("%.1f", x) : ((c SUBSEP t) in na ? "n/a" : "-") }
        END {
            printf "\nSummary: TPS (pgsplit = consistency lsn, pgsplit-off = consistency off)\n"
            printf "  %-29s", "cell"
            for (j = 1; j <= nt; j++) printf " %11s", tl[j]
            printf " %11s %11s %11s\n", "pgsplit/dir", "pgsplit/pgb", "off/pgb"
            for (i = 1; i <= k; i++) {
                c = cells[i]
                printf "  %-29s", c
                for (j = 1; j <= nt; j++) printf " %11s", f(c, tl[j], m(c, tl[j]))
                printf " %11s %11s %11s\n", r(m(c, "pgsplit"), m(c, "direct")), r(m(c, "pgsplit"), m(c, "pgbouncer")),
                    r(m(c, "pgsplit-off"), m(c, "pgbouncer"))
            }
            printf "\nSummary: proxy CPU us per transaction\n"
            printf "  %-29s", "cell"
            for (j = 1; j <= nt; j++) if (tl[j] != "direct") printf " %11s", tl[j]
            printf " %11s\n", "pgsplit/pgb"
            for (i = 1; i <= k; i++) {
                c = cells[i]
                printf "  %-29s", c
                for (j = 1; j <= nt; j++) if (tl[j] != "direct") printf " %11s", f(c, tl[j], us(c, tl[j]))
                printf " %11s\n", r(us(c, "pgsplit"), us(c, "pgbouncer"))
            }
        }' "$CSV"
}

print_prepared() {
    # pgsplit -M prepared next to -M extended, when both ran.
    awk -F, '
        NR > 1 && $7 == "pgsplit" && ($4 == "prepared" || $4 == "extended") {
            k = $3 SUBSEP $5
            if (!(k in seen)) { seen[k] = 1; keys[++m] = k }
            if ($22 == "ok") { tps[k, $4] += $9; n[k, $4]++ } else bad[k, $4] += $13 + $14 + 1
            err[k, $4] += $13 + $14
        }
        END {
            for (i = 1; i <= m; i++) if (n[keys[i], "prepared"] + bad[keys[i], "prepared"] > 0) any = 1
            if (!any) exit
            printf "\npgsplit (lsn) -M prepared next to -M extended (errors = failed transactions + aborted clients)\n"
            printf "  %-13s %7s %12s %12s %9s %16s\n", "workload", "clients", "extended", "prepared", "prep/ext", "prepared errors"
            for (i = 1; i <= m; i++) {
                k = keys[i]; split(k, p, SUBSEP)
                e = n[k, "extended"] ? tps[k, "extended"] / n[k, "extended"] : 0
                q = n[k, "prepared"] ? tps[k, "prepared"] / n[k, "prepared"] : 0
                printf "  %-13s %7s %12s %12s %9s %16d\n", p[1], p[2], e ? sprintf("%.1f", e) : "-",
                    q ? sprintf("%.1f", q) : "failed", (e && q) ? sprintf("%.3f", q / e) : "-", err[k, "prepared"]
            }
        }' "$CSV"
}

ncells=0
for w in $WORKLOADS; do for p in $PROTOCOLS; do for c in $CLIENTS; do ncells=$((ncells + 1)); done; done; done
nt=$(wc -w <<<"$TARGETS")
log "throughput: $ncells cells x $nt targets x $ROUNDS rounds x ${DURATION}s ≈ $((ncells * nt * ROUNDS * (DURATION + 3) / 60 + 1)) min"

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
            printf '%s\n' "$table" >&2
            TABLES+="$table"$'\n'
        done
    done
done

echo
echo "=================================================================="
echo "transaction pooling benchmark: $(nproc) CPUs, primary + 2 replicas, scale $SCALE, -j $JOBS"
echo "cluster settings (every node): $SETTINGS"
echo "pgsplit: pool mode transaction, max_server_connections $POOL per backend, worker_threads ${PGSPLIT_THREADS:-default};"
echo "PgBouncer: pool_mode transaction, default_pool_size $POOL, primary only"
echo "CPU us = proxy process CPU per transaction; replica% = statements replicas served;"
echo "pool waits = requests that waited for a free server connection"
printf '%s\n' "$IDLE_TABLE"
printf '%s' "$TABLES"
print_summary
print_prepared
echo
echo "raw results: $IDLE_CSV $CSV"
if ((FAILED_RUNS > 0)); then
    die "$FAILED_RUNS run(s) failed; see $LOGS"
fi
