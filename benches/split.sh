#!/usr/bin/env bash
# Read/write-splitting benchmark: read-heavy pgbench traffic (90% single-row
# reads, 10% single-row updates, autocommit) through pgsplit's READ-WRITE port
# in front of a primary and two streaming replicas, next to the same traffic
# straight to the primary and through PgBouncer, all in one run.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/split.sh                    # default run, about 4 minutes (+ build)
#   QUICK=1 benches/split.sh            # sanity run, about 40 seconds (+ build)
#
# What it does:
#   1. builds pgsplit (cargo build --release) and copies the binary into a
#      work dir, so a concurrent rebuild cannot change it mid-run;
#   2. `pgsplit testbed --replicas 2` starts a primary and two streaming
#      replicas on loopback; `pgbench -i -s $SCALE` initialises db `app` as
#      user `app` directly on the primary; waits until both replicas have
#      replayed the primary's WAL;
#   3. starts one pgsplit process per pgsplit target (all three nodes as
#      backends, SCRAM client auth), differing only in one setting:
#        pgsplit          default configuration (consistency lsn, cache on)
#        pgsplit-nocache  [routing] classify_cache = 0
#        pgsplit-off      [consistency] mode = "off" (no read-your-writes)
#        pgsplit-window   [consistency] mode = "window" (optional target)
#      and PgBouncer (pool_mode = transaction, everything to the primary, run
#      as the `postgres` OS user, installed with apt-get if missing);
#   4. for every cell (protocol x client count) runs pgbench with two script
#      files, `-f read.sql@9 -f write.sql@1`, against the targets interleaved
#      (direct pgsplit pgsplit-nocache pgsplit-off pgbouncer direct ...) for
#      ROUNDS rounds of DURATION seconds; before every run the replicas are
#      allowed to catch up, so every target starts from the same state;
#   5. per run records TPS (without initial connection time), average latency
#      (all, reads, writes), the proxy process's CPU time (user+sys from
#      /proc/PID/stat) -> CPU microseconds per transaction, and for pgsplit
#      targets the deltas of its /metrics over the run: statements served by
#      replicas / all statements, classification time per classified message,
#      and the read-your-writes outcomes (replica / primary / waited);
#   6. prints a table per cell and a summary, and writes every run to
#      $OUT/split.csv (pgbench outputs go to $OUT/split-logs/).
#
# Environment variables (defaults in brackets):
#   DURATION          seconds per pgbench run [10]
#   ROUNDS            rounds of interleaved runs per cell [1]
#   QUICK=1           3 s x 1 round, 8 clients; DURATION/ROUNDS/CLIENTS still
#                     override it
#   PROTOCOLS         pgbench -M values ["simple extended"]; "prepared" works too
#   CLIENTS           client counts ["8 32"]
#   JOBS              pgbench -j [2]
#   SCALE             pgbench -i -s [10]
#   READ_WEIGHT       weight of read.sql [9]
#   WRITE_WEIGHT      weight of write.sql [1]
#   TARGETS           subset/order of "direct pgsplit pgsplit-nocache
#                     pgsplit-off pgbouncer" [all five]; "pgsplit-window" may
#                     be added
#   PGSPLIT_THREADS   pgsplit [runtime] worker_threads [unset: one per core]
#   PGSPLIT_BIN       use this pgsplit binary instead of building one
#   OUT               output dir for the CSV and logs [target/bench]
#   KEEP_WORK=1       keep the work dir (configs, proxy logs) after the run
#
# Reading the results: every number is only meaningful next to the others of
# the same run. On a small machine the three PostgreSQL servers, pgbench and
# the proxy share the CPUs, so sending reads to replicas adds no capacity here:
# it measures what splitting costs, not what it gains on separate machines.
# See benches/README.md.
#
# Needs root (PostgreSQL and PgBouncer run as `postgres` via runuser).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-3}
    ROUNDS=${ROUNDS:-1}
    CLIENTS=${CLIENTS:-8}
else
    DURATION=${DURATION:-10}
    ROUNDS=${ROUNDS:-1}
    CLIENTS=${CLIENTS:-8 32}
fi
PROTOCOLS=${PROTOCOLS:-simple extended}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
READ_WEIGHT=${READ_WEIGHT:-9}
WRITE_WEIGHT=${WRITE_WEIGHT:-1}
TARGETS=${TARGETS:-direct pgsplit pgsplit-nocache pgsplit-off pgbouncer}
PGSPLIT_THREADS=${PGSPLIT_THREADS:-}
PGSPLIT_BIN=${PGSPLIT_BIN:-}
OUT=${OUT:-target/bench}
KEEP_WORK=${KEEP_WORK:-0}

CLK_TCK=$(getconf CLK_TCK)
CSV="$OUT/split.csv"
LOGS="$OUT/split-logs"

log() { printf '[split.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (servers run as the postgres OS user via runuser)"
id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (install postgresql)"
for t in $TARGETS; do
    case $t in
    direct | pgsplit | pgsplit-nocache | pgsplit-off | pgsplit-window | pgbouncer) ;;
    *) die "unknown target '$t' in TARGETS" ;;
    esac
done
for p in $PROTOCOLS; do
    case $p in simple | extended | prepared) ;; *) die "unknown protocol '$p' in PROTOCOLS" ;; esac
done
for n in $CLIENTS $DURATION $ROUNDS $JOBS $SCALE $READ_WEIGHT $WRITE_WEIGHT; do
    [[ $n =~ ^[0-9]+$ ]] || die "not a number: '$n'"
done
((READ_WEIGHT + WRITE_WEIGHT > 0)) || die "READ_WEIGHT + WRITE_WEIGHT must be > 0"
command -v curl >/dev/null || die "curl is needed to read pgsplit's /metrics"

is_pgsplit() { [[ $1 == pgsplit || $1 == pgsplit-* ]]; }

# ---------------------------------------------------------------------------
# Cleanup: stop exactly the processes this script started, newest first.
# ---------------------------------------------------------------------------
WORK=""
TESTBED_PID=""
declare -A PGSPLIT_PID=()   # target -> pid
declare -A PGSPLIT_PORT=()  # target -> read-write port
declare -A PGSPLIT_ADMIN=() # target -> admin port
PGBOUNCER_PID=""            # the runuser wrapper
PGBOUNCER_REAL=""           # pgbouncer itself (from its pidfile)

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
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
build_pgsplit
[[ $TARGETS == *pgbouncer* ]] && ensure_pgbouncer

WORK=$(mktemp -d /tmp/pgsplit-bench-split.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$OUT" "$LOGS"
cp "$PGSPLIT_BIN" "$WORK/pgsplit"
PGSPLIT="$WORK/pgsplit"

# Server connections the primary may need at once: pgbench direct, every
# pgsplit process (its pool keeps idle connections for a while after a run),
# PgBouncer's pool, health probes, superuser slots. The testbed's default of
# 300 is too few for 4 x 64 clients, so ask for enough.
max_clients=0
for c in $CLIENTS; do ((c > max_clients)) && max_clients=$c; done
MAX_CONNECTIONS=$(((max_clients + 2) * 5 + 100))
((MAX_CONNECTIONS < 300)) && MAX_CONNECTIONS=300

log "starting the cluster (pgsplit testbed --replicas 2, max_connections = $MAX_CONNECTIONS)"
start_testbed 2 "max_connections = $MAX_CONNECTIONS"
log "primary on 127.0.0.1:$PRIMARY_PORT, replicas on $REPLICA_PORTS ($CLUSTER_DIR)"

log "pgbench -i -s $SCALE (directly on the primary)"
PGPASSWORD=app "$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PRIMARY_PORT" -U app app \
    >"$WORK/pgbench-init.log" 2>&1 || {
    cat "$WORK/pgbench-init.log" >&2
    die "pgbench -i failed"
}
log "waiting for the replicas to replay the initial load"
wait_replicas 120

# The workload: autocommit single statements, so each is routed on its own.
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
# pgsplit: one process per pgsplit target, differing in one setting each.
# ---------------------------------------------------------------------------
pgsplit_extra() {
    # pgsplit_extra TARGET: the TOML a pgsplit target adds to the common
    # configuration (lib.sh's pgsplit_toml: listen ports, every node as a
    # backend, user app).
    case $1 in
    pgsplit) ;;
    pgsplit-nocache) printf '[routing]\nclassify_cache = 0\n' ;;
    pgsplit-off) printf '[consistency]\nmode = "off"\n' ;;
    pgsplit-window) printf '[consistency]\nmode = "window"\n' ;;
    esac
    if [[ -n $PGSPLIT_THREADS ]]; then
        printf '\n[runtime]\nworker_threads = %s\n' "$PGSPLIT_THREADS"
    fi
}

for target in $TARGETS; do
    is_pgsplit "$target" || continue
    start_pgsplit "$target" "$(pgsplit_extra "$target")"
done
for target in "${!PGSPLIT_PID[@]}"; do
    wait_pgsplit "$target"
done

# ---------------------------------------------------------------------------
# PgBouncer (lib.sh): transaction mode, everything to the primary.
# ---------------------------------------------------------------------------
if [[ $TARGETS == *pgbouncer* ]]; then
    start_pgbouncer 40 $((max_clients + 100))
fi

# ---------------------------------------------------------------------------
# The runs.
# ---------------------------------------------------------------------------
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

CSV_HEADER="protocol,clients,round,target,duration_s,tps,latency_ms,read_latency_ms,write_latency_ms"
CSV_HEADER+=",conn_ms,transactions,failed_txns,proxy_cpu_s,proxy_cpu_us_per_txn"
CSV_HEADER+=",statements,replica_statements,replica_share,classified,classify_avg_us"
CSV_HEADER+=",ryw_replica,ryw_primary,ryw_waited,status"
echo "$CSV_HEADER" >"$CSV"

script_latency() {
    # script_latency LOGFILE N: the "latency average" of pgbench's section
    # "SQL script N" (printed with several -f scripts).
    awk -v n="$2" '
        /^SQL script [0-9]+:/ { cur = $3 + 0 }
        cur == n && /^ - latency average = / { print $5; exit }' "$1"
}

FAILED_RUNS=0
run_one() {
    # run_one PROTOCOL CLIENTS ROUND TARGET: one pgbench run, one CSV row.
    local proto=$1 clients=$2 round=$3 target=$4
    local port pid before=0 after=0 rc=0 logf tps lat rlat wlat conn txns failed cpu_s cpu_us status
    local stmts="" repl="" share="" ncls="" cls_us="" ryw_r="" ryw_p="" ryw_w=""
    local mb="$WORK/metrics-before.txt" ma="$WORK/metrics-after.txt"
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    logf="$LOGS/${proto}-c${clients}-r${round}-${target}.log"
    # Every target starts with the replicas caught up.
    wait_replicas 60
    if [[ -n $pid ]]; then
        alive "$pid" || die "$target (pid $pid) is gone; see $WORK"
    fi
    is_pgsplit "$target" && scrape "$target" "$mb"
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    PGPASSWORD=app "$PGBENCH" -n -M "$proto" -c "$clients" -j "$JOBS" -T "$DURATION" -s "$SCALE" \
        -f "$WORK/read.sql@$READ_WEIGHT" -f "$WORK/write.sql@$WRITE_WEIGHT" \
        -h 127.0.0.1 -p "$port" -U app app >"$logf" 2>&1 || rc=$?
    [[ -n $pid ]] && after=$(cpu_ticks "$pid")
    if is_pgsplit "$target"; then
        scrape "$target" "$ma"
        stmts=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write)
        repl=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write target=replica)
        share=$(awk -v r="$repl" -v s="$stmts" 'BEGIN { if (s > 0) printf "%.4f", r / s }')
        ncls=$(metric_delta "$mb" "$ma" pgsplit_classify_duration_seconds_count)
        cls_us=$(awk -v t="$(metric_delta "$mb" "$ma" pgsplit_classify_duration_seconds_sum)" -v n="$ncls" \
            'BEGIN { if (n > 0) printf "%.3f", t * 1e6 / n }')
        # Outcomes (src/router/reason.rs): known and waited went to a
        # replica, primary_unknown / primary_behind / primary_window to the
        # primary; "replica" here is known, without the waited ones.
        ryw_r=$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=known)
        ryw_w=$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=waited)
        ryw_p=$(awk -v a="$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=primary_unknown)" \
            -v b="$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=primary_behind)" \
            -v c="$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=primary_window)" \
            'BEGIN { printf "%.9g", a + b + c }')
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$logf")
    lat=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$logf")
    conn=$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$logf")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$logf")
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$logf")
    failed=${failed:-0}
    rlat=$(script_latency "$logf" 1)
    wlat=$(script_latency "$logf" 2)
    status=ok
    if [[ $rc != 0 || -z $tps || -z $txns || $txns == 0 || $failed != 0 ]]; then
        status="failed(rc=$rc)"
        FAILED_RUNS=$((FAILED_RUNS + 1))
        log "pgbench against $target failed (rc=$rc, failed txns $failed); last lines of $logf:"
        tail -5 "$logf" >&2
    fi
    if [[ -n $pid && -n $txns && $txns != 0 ]]; then
        cpu_s=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz }')
        cpu_us=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$txns" \
            'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
    else
        cpu_s="" cpu_us=""
    fi
    echo "$proto,$clients,$round,$target,$DURATION,${tps:-},${lat:-},${rlat:-},${wlat:-},${conn:-},${txns:-},$failed,$cpu_s,$cpu_us,$stmts,$repl,$share,$ncls,$cls_us,$ryw_r,$ryw_p,$ryw_w,$status" >>"$CSV"
    local extra=""
    if is_pgsplit "$target"; then
        extra=$(awk -v s="$share" -v c="$cls_us" -v r="$ryw_r" -v p="$ryw_p" -v w="$ryw_w" \
            'BEGIN { printf "  replica %5.1f%%  classify %s us  ryw %s/%s/%s", s * 100, c, r, p, w }')
    fi
    log "  $(printf '%-15s round %d: tps %9s  lat %7s ms  proxy cpu %6s us/txn%s  %s' \
        "$target" "$round" "${tps:--}" "${lat:--}" "${cpu_us:--}" "$extra" "$status")"
}

# Prints the table for one cell from the CSV.
print_cell() {
    local proto=$1 clients=$2
    awk -F, -v proto="$proto" -v c="$clients" -v rounds="$ROUNDS" -v dur="$DURATION" \
        -v rw="$READ_WEIGHT" -v ww="$WRITE_WEIGHT" '
        NR > 1 && $1 == proto && $2 == c && $23 == "ok" {
            t = $4
            if (!(t in n)) order[++k] = t
            n[t]++; tps[t] += $6; lat[t] += $7; rl[t] += $8; wl[t] += $9; txn[t] += $11
            if ($13 != "") { cpu[t] += $13; cpun[t] += $11 }
            if ($15 != "") {
                st[t] += $15; rs[t] += $16; ncls[t] += $18; clss[t] += $19 * $18
                yr[t] += $20; yp[t] += $21; yw[t] += $22; split_[t] = 1
            }
        }
        END {
            printf "\n-M %s, %d clients, reads:writes %d:%d (%d x %d s)\n", proto, c, rw, ww, rounds, dur
            printf "  %-15s %9s %7s %7s %8s %7s %7s %7s %8s %7s %7s  %s\n", "target", "TPS", "lat ms",
                "read ms", "write ms", "CPU us", "vs dir", "vs pgb", "replica%", "clsf us", "clsf/st", "ryw replica/primary/waited"
            for (i = 1; i <= k; i++) { t = order[i]; mt[t] = tps[t] / n[t] }
            for (i = 1; i <= k; i++) {
                t = order[i]
                us = (t in cpun && cpun[t] > 0) ? sprintf("%.1f", cpu[t] * 1e6 / cpun[t]) : "-"
                vd = ("direct" in mt) ? sprintf("%.3f", mt[t] / mt["direct"]) : "-"
                vb = ("pgbouncer" in mt) ? sprintf("%.3f", mt[t] / mt["pgbouncer"]) : "-"
                if (t in split_) {
                    share = st[t] > 0 ? sprintf("%.1f", rs[t] * 100 / st[t]) : "-"
                    cl = ncls[t] > 0 ? sprintf("%.2f", clss[t] / ncls[t]) : "-"
                    per = st[t] > 0 ? sprintf("%.2f", ncls[t] / st[t]) : "-"
                    ryw = sprintf("%d/%d/%d", yr[t], yp[t], yw[t])
                } else { share = "-"; cl = "-"; per = "-"; ryw = "-" }
                printf "  %-15s %9.1f %7.3f %7.3f %8.3f %7s %7s %7s %8s %7s %7s  %s\n", t, mt[t], lat[t] / n[t],
                    rl[t] / n[t], wl[t] / n[t], us, vd, vb, share, cl, per, ryw
            }
        }' "$CSV"
}

print_summary() {
    awk -F, -v targets="$TARGETS" '
        BEGIN { nt = split(targets, tl, " ") }
        NR > 1 && $23 == "ok" {
            cell = "-M " $1 " c" $2
            if (!(cell in seen)) { seen[cell] = 1; cells[++k] = cell }
            key = cell SUBSEP $4
            n[key]++; tps[key] += $6
            if ($13 != "") { cpu[key] += $13; txn[key] += $11 }
        }
        function m(c, t) { return (c SUBSEP t) in n ? tps[c SUBSEP t] / n[c SUBSEP t] : 0 }
        function us(c, t) { return txn[c SUBSEP t] > 0 ? cpu[c SUBSEP t] * 1e6 / txn[c SUBSEP t] : 0 }
        function r(a, b) { return (a > 0 && b > 0) ? sprintf("%.3f", a / b) : "-" }
        function f(x) { return x > 0 ? sprintf("%.1f", x) : "-" }
        END {
            printf "\nSummary: TPS (pgsplit = default configuration)\n"
            printf "  %-16s", "cell"
            for (j = 1; j <= nt; j++) printf " %15s", tl[j]
            printf " %11s %11s\n", "pgsplit/dir", "pgsplit/pgb"
            for (i = 1; i <= k; i++) {
                c = cells[i]
                printf "  %-16s", c
                for (j = 1; j <= nt; j++) printf " %15s", f(m(c, tl[j]))
                printf " %11s %11s\n", r(m(c, "pgsplit"), m(c, "direct")), r(m(c, "pgsplit"), m(c, "pgbouncer"))
            }
            printf "\nSummary: proxy CPU us per transaction\n"
            printf "  %-16s", "cell"
            for (j = 1; j <= nt; j++) if (tl[j] != "direct") printf " %15s", tl[j]
            printf " %11s\n", "pgsplit/pgb"
            for (i = 1; i <= k; i++) {
                c = cells[i]
                printf "  %-16s", c
                for (j = 1; j <= nt; j++) if (tl[j] != "direct") printf " %15s", f(us(c, tl[j]))
                printf " %11s\n", r(us(c, "pgsplit"), us(c, "pgbouncer"))
            }
        }' "$CSV"
}

ncells=0
for proto in $PROTOCOLS; do for c in $CLIENTS; do ncells=$((ncells + 1)); done; done
nt=$(wc -w <<<"$TARGETS")
log "$ncells cells x $nt targets x $ROUNDS rounds x ${DURATION}s ≈ $((ncells * nt * ROUNDS * (DURATION + 2) / 60 + 1)) min"

TABLES=""
for proto in $PROTOCOLS; do
    for c in $CLIENTS; do
        log "cell: -M $proto -c $c -j $JOBS, read.sql@$READ_WEIGHT write.sql@$WRITE_WEIGHT"
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in $TARGETS; do
                run_one "$proto" "$c" "$round" "$target"
            done
        done
        table=$(print_cell "$proto" "$c")
        printf '%s\n' "$table"
        TABLES+="$table"$'\n'
    done
done

echo
echo "=================================================================="
echo "read/write split benchmark: $(nproc) CPUs, primary + 2 replicas, scale $SCALE, -j $JOBS,"
echo "reads:writes $READ_WEIGHT:$WRITE_WEIGHT (autocommit), $ROUNDS x ${DURATION}s per target and cell"
echo "pgsplit worker_threads: ${PGSPLIT_THREADS:-default}; PgBouncer pool_mode=transaction (primary only)"
echo "CPU us = proxy process CPU per transaction; replica% = statements served by replicas;"
echo "clsf us = time per observation of pgsplit_classify_duration_seconds; clsf/st = observations"
echo "per statement; ryw = read-your-writes outcomes (replica/primary/waited)"
printf '%s' "$TABLES"
print_summary
echo
echo "raw results: $CSV"
if ((FAILED_RUNS > 0)); then
    die "$FAILED_RUNS run(s) failed; see $LOGS"
fi
