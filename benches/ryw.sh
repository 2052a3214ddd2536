#!/usr/bin/env bash
# Read-your-writes benchmark: what pgsplit's consistency modes cost on the
# read-write port, with synchronous_commit on and off, in one run.
#
# Usage (from anywhere; paths are relative to the repository root):
#   benches/ryw.sh                      # full run, about 10 minutes (+ build)
#   QUICK=1 benches/ryw.sh              # smoke run, about 1.5 minutes (+ build)
#
# What it does:
#   1. builds pgsplit (cargo build --release) and copies the binary into a
#      work dir, so a concurrent rebuild cannot change it mid-run;
#   2. `pgsplit testbed --replicas 2` starts a primary and two streaming
#      replicas on loopback (FSYNC as a postgresql.conf line on every node
#      when set); `pgbench -i -s $SCALE` initialises db `app` as user `app`
#      on the primary; waits until both replicas have replayed it;
#   3. starts one pgsplit process per target, all three nodes as backends,
#      SCRAM client auth, default pool (transaction mode, 200 server
#      connections per backend), differing only in [consistency]:
#        lsn       mode = "lsn", max_wait_ms = 0 (the default configuration)
#        lsn-wait  mode = "lsn", max_wait_ms = MAX_WAIT_MS
#        off       mode = "off"
#   4. for each synchronous_commit value in SYNC_COMMITS (a block): sets it on
#      every node (ALTER SYSTEM + pg_reload_conf()), waits until the replicas
#      have caught up, then for every protocol runs the 90/10 mix (as in
#      split.sh: -f read.sql@9 -f write.sql@1, autocommit) with CLIENTS
#      clients against the targets interleaved (lsn lsn-wait off lsn ...) for
#      ROUNDS rounds of DURATION seconds, with per-transaction logs (pgbench
#      -l) and pg_stat_replication sampled every LAG_INTERVAL seconds;
#   5. per run records TPS, latency by script, read latency p50/p99 (from the
#      per-transaction logs, script 0 = read.sql), proxy CPU per transaction,
#      and the deltas of pgsplit's /metrics: statements by target and reason,
#      internal queries by kind, read-your-writes outcomes; plus the replicas'
#      replay/write lag (median and max of the samples);
#   6. prints (stdout) the cluster settings, a table per block and protocol,
#      internal queries by kind and a summary against the targets; writes
#      $OUT/ryw.csv (pgbench outputs go to $OUT/ryw-logs/).
#
# Environment variables (defaults in brackets):
#   SYNC_COMMITS      synchronous_commit values, one block each ["on off"]
#   FSYNC             on|off for every node [unset: the testbed's, off]
#   DURATION          seconds per pgbench run [15; QUICK 4]
#   ROUNDS            rounds of interleaved runs per block and protocol [3; QUICK 1]
#   PROTOCOLS         pgbench -M values ["simple extended"; QUICK "extended"]
#   CLIENTS           pgbench -c [32]
#   JOBS              pgbench -j [2]
#   SCALE             pgbench -i -s [10]
#   READ_WEIGHT       weight of read.sql [9]
#   WRITE_WEIGHT      weight of write.sql [1]
#   TARGETS           subset/order of "lsn lsn-wait off" [all three]; "direct"
#                     may be added (pgbench straight to the primary)
#   MAX_WAIT_MS       [consistency] max_wait_ms of lsn-wait [2]
#   POLL_MS           [consistency] poll_ms of every target [unset: default 5]
#   LAG_INTERVAL      seconds between pg_stat_replication samples [0.5]
#   PGSPLIT_THREADS   pgsplit [runtime] worker_threads [unset: one per core]
#   PGSPLIT_BIN       use this pgsplit binary instead of building one
#   OUT               output dir for the CSV and logs [target/bench]
#   KEEP_WORK=1       keep the work dir (configs, proxy logs, transaction logs)
#
# Reading the results: every number is only meaningful next to the others of
# the same run. On a small machine the three PostgreSQL servers, pgbench and
# the proxy share the CPUs. See benches/README.md.
#
# Needs root (PostgreSQL runs as `postgres` via runuser).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-4}
    ROUNDS=${ROUNDS:-1}
    PROTOCOLS=${PROTOCOLS:-extended}
else
    DURATION=${DURATION:-15}
    ROUNDS=${ROUNDS:-3}
    PROTOCOLS=${PROTOCOLS:-simple extended}
fi
SYNC_COMMITS=${SYNC_COMMITS:-on off}
FSYNC=${FSYNC:-}
CLIENTS=${CLIENTS:-32}
JOBS=${JOBS:-2}
SCALE=${SCALE:-10}
READ_WEIGHT=${READ_WEIGHT:-9}
WRITE_WEIGHT=${WRITE_WEIGHT:-1}
TARGETS=${TARGETS:-lsn lsn-wait off}
MAX_WAIT_MS=${MAX_WAIT_MS:-2}
POLL_MS=${POLL_MS:-}
LAG_INTERVAL=${LAG_INTERVAL:-0.5}
PGSPLIT_THREADS=${PGSPLIT_THREADS:-}
PGSPLIT_BIN=${PGSPLIT_BIN:-}
OUT=${OUT:-target/bench}
KEEP_WORK=${KEEP_WORK:-0}

CLK_TCK=$(getconf CLK_TCK)
CSV="$OUT/ryw.csv"
LOGS="$OUT/ryw-logs"

log() { printf '[ryw.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# shellcheck source=benches/lib.sh
source "$REPO/benches/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (servers run as the postgres OS user via runuser)"
id postgres >/dev/null 2>&1 || die "no 'postgres' OS user (install postgresql)"
for t in $TARGETS; do
    case $t in direct | lsn | lsn-wait | off) ;; *) die "unknown target '$t' in TARGETS" ;; esac
done
for p in $PROTOCOLS; do
    case $p in simple | extended | prepared) ;; *) die "unknown protocol '$p' in PROTOCOLS" ;; esac
done
for v in $SYNC_COMMITS; do
    case $v in on | off | local | remote_write | remote_apply) ;; *) die "bad synchronous_commit '$v'" ;; esac
done
case $FSYNC in "" | on | off) ;; *) die "FSYNC takes on or off, not '$FSYNC'" ;; esac
for n in $CLIENTS $DURATION $ROUNDS $JOBS $SCALE $READ_WEIGHT $WRITE_WEIGHT $MAX_WAIT_MS $POLL_MS; do
    [[ $n =~ ^[0-9]+$ ]] || die "not a number: '$n'"
done
[[ $LAG_INTERVAL =~ ^[0-9]*\.?[0-9]+$ ]] || die "LAG_INTERVAL is not a number: '$LAG_INTERVAL'"
((READ_WEIGHT > 0 && WRITE_WEIGHT > 0)) || die "READ_WEIGHT and WRITE_WEIGHT must be > 0"
command -v curl >/dev/null || die "curl is needed to read pgsplit's /metrics"

is_pgsplit() { [[ $1 != direct ]]; }

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
SAMPLER_PID=""

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_pid "$SAMPLER_PID" 5
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
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
PORT_LOW=10000
PORT_HIGH=$((EPHEMERAL_LOW > PORT_LOW + 1000 ? EPHEMERAL_LOW - 1 : 65000))

# ---------------------------------------------------------------------------
# Build, work dir, cluster.
# ---------------------------------------------------------------------------
build_pgsplit
WORK=$(mktemp -d /tmp/pgsplit-bench-ryw.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$OUT" "$LOGS" "$WORK/lat"
cp "$PGSPLIT_BIN" "$WORK/pgsplit"
PGSPLIT="$WORK/pgsplit"

conf=()
[[ -n $FSYNC ]] && conf+=("fsync = $FSYNC")
log "starting the cluster (pgsplit testbed --replicas 2${conf[*]:+; ${conf[*]}})"
start_testbed 2 "${conf[@]}"
log "primary on 127.0.0.1:$PRIMARY_PORT, replicas on $REPLICA_PORTS ($CLUSTER_DIR)"

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
# pgsplit: one process per target.
# ---------------------------------------------------------------------------
pgsplit_extra() {
    printf '[consistency]\n'
    case $1 in
    lsn) printf 'mode = "lsn"\nmax_wait_ms = 0\n' ;;
    lsn-wait) printf 'mode = "lsn"\nmax_wait_ms = %s\n' "$MAX_WAIT_MS" ;;
    off) printf 'mode = "off"\n' ;;
    esac
    [[ -z $POLL_MS ]] || printf 'poll_ms = %s\n' "$POLL_MS"
    [[ -z $PGSPLIT_THREADS ]] || printf '\n[runtime]\nworker_threads = %s\n' "$PGSPLIT_THREADS"
}
for target in $TARGETS; do
    is_pgsplit "$target" || continue
    start_pgsplit "$target" "$(pgsplit_extra "$target")"
done
for target in "${!PGSPLIT_PID[@]}"; do
    wait_pgsplit "$target"
done

port_of() { if [[ $1 == direct ]]; then echo "$PRIMARY_PORT"; else echo "${PGSPLIT_PORT[$1]}"; fi; }
pid_of() { if [[ $1 == direct ]]; then echo ""; else echo "${PGSPLIT_PID[$1]}"; fi; }

# ---------------------------------------------------------------------------
# Measuring one run.
# ---------------------------------------------------------------------------
LAG_SQL="SELECT application_name, round(coalesce(extract(epoch FROM replay_lag), 0) * 1000, 3),
    round(coalesce(extract(epoch FROM write_lag), 0) * 1000, 3),
    pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)
  FROM pg_stat_replication"

sample_lag() {
    # sample_lag FILE: one line per replica and sample ("name replay_ms
    # write_ms bytes") until killed.
    while true; do
        psql_pg "$PRIMARY_PORT" "$LAG_SQL" 2>/dev/null | tr '|' ' ' >>"$1" || true
        sleep "$LAG_INTERVAL"
    done
}

lag_stats() {
    # lag_stats FILE COLUMN: "median max" of a column of the samples.
    awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '
        { v[++n] = $1 }
        END { if (n == 0) { print "- -"; exit } printf "%.2f %.2f\n", v[int((n + 1) / 2)], v[n] }'
}

percentiles() {
    # percentiles FILE...: "count p50 p99" (ms) of latencies in microseconds,
    # one per line.
    cat "$@" | sort -n | awk '
        { v[++n] = $1 }
        END {
            if (n == 0) { print "0 - -"; exit }
            i50 = int(n * 0.50); if (i50 < 1) i50 = 1
            i99 = int(n * 0.99); if (i99 < 1) i99 = 1
            printf "%d %.3f %.3f\n", n, v[i50] / 1000, v[i99] / 1000
        }'
}

script_latency() {
    # script_latency LOGFILE N: the "latency average" of pgbench's section
    # "SQL script N" (printed with several -f scripts).
    awk -v n="$2" '
        /^SQL script [0-9]+:/ { cur = $3 + 0 }
        cur == n && /^ - latency average = / { print $5; exit }' "$1"
}

KINDS="login sync catalog position probe"
OUTCOMES="known waited primary_unknown primary_behind primary_window"
READ_REASONS="read consistency no_replica"

CSV_HEADER="fsync,synchronous_commit,protocol,clients,round,target,max_wait_ms,duration_s,tps,latency_ms"
CSV_HEADER+=",read_latency_ms,write_latency_ms,read_p50_ms,read_p99_ms,read_txns,transactions,failed_txns"
CSV_HEADER+=",aborted_clients,proxy_cpu_s,proxy_cpu_us_per_txn,statements,replica_statements,reads"
CSV_HEADER+=",replica_reads,writes,other_statements,internal_queries"
for k in $KINDS; do CSV_HEADER+=",internal_$k"; done
for o in $OUTCOMES; do CSV_HEADER+=",ryw_$o"; done
CSV_HEADER+=",ryw_wait_avg_ms,lag_samples,replay_lag_median_ms,replay_lag_max_ms,write_lag_median_ms"
CSV_HEADER+=",write_lag_max_ms,lag_bytes_max,status"
echo "$CSV_HEADER" >"$CSV"
# Column numbers, for the awk reports below.
col() { tr , '\n' <<<"$CSV_HEADER" | grep -nx "$1" | cut -d: -f1; }

FAILED_RUNS=0
run_one() {
    # run_one SYNC PROTOCOL ROUND TARGET: one pgbench run, one CSV row.
    local sync=$1 proto=$2 round=$3 target=$4
    local port pid before=0 after=0 rc=0 logf txdir lagf status cpu_s="" cpu_us="" mw=""
    local rlat wlat p50 p99 nread n k o v stmts="" repl="" reads="" rreads="" writes="" other=""
    local internal="" ikinds="" ryw="" wait_ms="" lagn lagr lagw lagb
    local mb="$WORK/metrics-before.txt" ma="$WORK/metrics-after.txt"
    port=$(port_of "$target")
    pid=$(pid_of "$target")
    tag="sc-$sync-$proto-r$round-$target"
    logf="$LOGS/$tag.log"
    txdir="$WORK/tx/$tag"
    lagf="$LOGS/$tag.lag"
    mkdir -p "$txdir"
    : >"$lagf"
    wait_replicas 60
    if [[ -n $pid ]]; then
        alive "$pid" || die "$target (pid $pid) is gone; see $WORK"
    fi
    is_pgsplit "$target" && scrape "$target" "$mb"
    [[ -n $pid ]] && before=$(cpu_ticks "$pid")
    sample_lag "$lagf" &
    SAMPLER_PID=$!
    PGPASSWORD=app "$PGBENCH" -n -M "$proto" -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -s "$SCALE" \
        -l --log-prefix="$txdir/tx" \
        -f "$WORK/read.sql@$READ_WEIGHT" -f "$WORK/write.sql@$WRITE_WEIGHT" \
        -h 127.0.0.1 -p "$port" -U app app >"$logf" 2>&1 || rc=$?
    [[ -n $pid ]] && after=$(cpu_ticks "$pid")
    stop_pid "$SAMPLER_PID" 5
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    pgbench_result "$logf"
    rlat=$(script_latency "$logf" 1)
    wlat=$(script_latency "$logf" 2)
    # Per-transaction log: client_id transaction_no time_us script_no
    # time_epoch time_us ...; script 0 is read.sql.
    awk '$4 == 0 && $3 ~ /^[0-9]+$/ { print $3 }' "$txdir"/tx.* >"$WORK/lat/$tag.read"
    rm -rf "$txdir"
    read -r nread p50 p99 < <(percentiles "$WORK/lat/$tag.read")
    read -r lagn < <(awk 'END { print NR }' "$lagf")
    read -r lagr lagrmax < <(lag_stats "$lagf" 2)
    read -r lagw lagwmax < <(lag_stats "$lagf" 3)
    read -r _ lagb < <(lag_stats "$lagf" 4)
    if is_pgsplit "$target"; then
        scrape "$target" "$ma"
        mw=0
        [[ $target == lsn-wait ]] && mw=$MAX_WAIT_MS
        stmts=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write)
        repl=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write target=replica)
        reads=0
        for k in $READ_REASONS; do
            v=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write reason="$k")
            reads=$((reads + ${v%.*}))
        done
        rreads=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write target=replica reason=read)
        writes=$(metric_delta "$mb" "$ma" pgsplit_statements_total listener=read_write reason=write)
        other=$((${stmts%.*} - reads - ${writes%.*}))
        internal=$(metric_delta "$mb" "$ma" pgsplit_internal_queries_total)
        for k in $KINDS; do
            ikinds+=",$(metric_delta "$mb" "$ma" pgsplit_internal_queries_total kind="$k")"
        done
        for o in $OUTCOMES; do
            ryw+=",$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome="$o")"
        done
        n=$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_wait_seconds_count)
        wait_ms=$(awk -v t="$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_wait_seconds_sum)" -v n="$n" \
            'BEGIN { if (n > 0) printf "%.3f", t * 1000 / n }')
        # Kinds this script does not know would be missed by the columns.
        for k in $(label_values "$ma" pgsplit_internal_queries_total kind); do
            [[ " $KINDS " == *" $k "* ]] || log "note: internal query kind '$k' is not in the CSV columns"
        done
    else
        for k in $KINDS; do ikinds+=","; done
        for o in $OUTCOMES; do ryw+=","; done
    fi
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
    echo "$FSYNC_NOW,$sync,$proto,$CLIENTS,$round,$target,$mw,$DURATION,${PB_TPS:-},${PB_LAT:-},${rlat:-},${wlat:-},$p50,$p99,$nread,${PB_TXNS:-},$PB_FAILED,$PB_ABORTED,$cpu_s,$cpu_us,$stmts,$repl,$reads,$rreads,$writes,$other,$internal$ikinds$ryw,$wait_ms,$lagn,$lagr,$lagrmax,$lagw,$lagwmax,$lagb,$status" >>"$CSV"
    local extra=""
    if is_pgsplit "$target"; then
        extra=$(awk -v r="$rreads" -v n="$reads" -v i="$internal" -v s="$stmts" \
            'BEGIN { printf "  replica/reads %5.1f%%  internal/st %.4f", (n > 0 ? r * 100 / n : 0), (s > 0 ? i / s : 0) }')
    fi
    log "  $(printf '%-9s round %d: tps %8.1f  read p50/p99 %s/%s ms  cpu %6s us/txn%s  replay lag med/max %s/%s ms  %s' \
        "$target" "$round" "${PB_TPS:-0}" "$p50" "$p99" "${cpu_us:--}" "$extra" "$lagr" "$lagrmax" "$status")"
}

# ---------------------------------------------------------------------------
# Reports (from the CSV; read latency percentiles pooled over rounds from the
# per-run files in $WORK/lat).
# ---------------------------------------------------------------------------
print_block() {
    # print_block SYNC PROTOCOL
    local sync=$1 proto=$2 t pooled="" files
    for t in $TARGETS; do
        files=("$WORK/lat/sc-$sync-$proto-r"*"-$t.read")
        [[ -e ${files[0]} ]] || files=(/dev/null)
        pooled+="$t $(percentiles "${files[@]}")"$'\n'
    done
    awk -F, -v sync="$sync" -v proto="$proto" -v pooled="$pooled" -v rounds="$ROUNDS" -v dur="$DURATION" \
        -v c_sync="$(col synchronous_commit)" -v c_proto="$(col protocol)" -v c_t="$(col target)" \
        -v c_tps="$(col tps)" -v c_lat="$(col latency_ms)" -v c_wl="$(col write_latency_ms)" \
        -v c_rl="$(col read_latency_ms)" -v c_cpu="$(col proxy_cpu_s)" -v c_txn="$(col transactions)" \
        -v c_st="$(col statements)" -v c_reads="$(col reads)" -v c_rr="$(col replica_reads)" \
        -v c_int="$(col internal_queries)" -v c_known="$(col ryw_known)" -v c_status="$(col status)" \
        -v c_lagr="$(col replay_lag_median_ms)" -v c_lagrmax="$(col replay_lag_max_ms)" \
        -v c_lagw="$(col write_lag_median_ms)" -v c_lagwmax="$(col write_lag_max_ms)" -v c_fsync="$(col fsync)" \
        -v c_clients="$(col clients)" -v c_bytes="$(col lag_bytes_max)" '
        BEGIN {
            n = split(pooled, lines, "\n")
            for (i = 1; i <= n; i++) if (split(lines[i], f, " ") == 4) { p50[f[1]] = f[3]; p99[f[1]] = f[4] }
        }
        NR > 1 && $c_sync == sync && $c_proto == proto {
            t = $c_t
            if (!(t in n_)) { order[++k] = t; n_[t] = 0 }
            fsync = $c_fsync; clients = $c_clients
            if ($c_status != "ok") { bad[t]++; next }
            n_[t]++; tps[t] += $c_tps; lat[t] += $c_lat; rl[t] += $c_rl; wl[t] += $c_wl
            if ($c_cpu != "") { cpu[t] += $c_cpu; cpun[t] += $c_txn }
            if ($c_st != "") {
                sp[t] = 1; st[t] += $c_st; reads[t] += $c_reads; rr[t] += $c_rr; int_[t] += $c_int
                for (j = 0; j < 5; j++) ryw[t, j] += $(c_known + j)
            }
            lr[t] += $c_lagr; if ($c_lagrmax > lrmax[t]) lrmax[t] = $c_lagrmax
            lw[t] += $c_lagw; if ($c_lagwmax > lwmax[t]) lwmax[t] = $c_lagwmax
            if ($c_bytes > lbmax[t]) lbmax[t] = $c_bytes
        }
        END {
            printf "\nsynchronous_commit = %s, fsync = %s: -M %s, %d clients, 90/10 mix (%d x %d s)\n", sync, fsync, proto,
                clients, rounds, dur
            printf "  %-9s %8s %6s %7s %7s %7s %8s %7s %8s %9s %20s %13s %13s\n", "target", "TPS", "vs off", "lat ms",
                "read50", "read99", "write ms", "CPU us", "replica%", "intern/st", "ryw kn/wt/unk/beh", "replay med/max",
                "write med/max"
            for (i = 1; i <= k; i++) { t = order[i]; if (n_[t] > 0) mt[t] = tps[t] / n_[t] }
            for (i = 1; i <= k; i++) {
                t = order[i]
                if (n_[t] == 0) { printf "  %-9s %8s (%d failed runs)\n", t, "failed", bad[t]; continue }
                vo = ("off" in mt) ? sprintf("%.3f", mt[t] / mt["off"]) : "-"
                us = (cpun[t] > 0) ? sprintf("%.1f", cpu[t] * 1e6 / cpun[t]) : "-"
                if (t in sp) {
                    share = reads[t] > 0 ? sprintf("%.1f", rr[t] * 100 / reads[t]) : "-"
                    ipst = st[t] > 0 ? sprintf("%.4f", int_[t] / st[t]) : "-"
                    y = sprintf("%d/%d/%d/%d", ryw[t, 0], ryw[t, 1], ryw[t, 2], ryw[t, 3])
                } else { share = "-"; ipst = "-"; y = "-" }
                printf "  %-9s %8.1f %6s %7.3f %7s %7s %8.3f %7s %8s %9s %20s %13s %13s\n", t, mt[t], vo, lat[t] / n_[t],
                    p50[t], p99[t], wl[t] / n_[t], us, share, ipst, y,
                    sprintf("%.1f/%.1f", lr[t] / n_[t], lrmax[t]), sprintf("%.1f/%.1f", lw[t] / n_[t], lwmax[t])
            }
        }' "$CSV"
}

print_internal() {
    # Internal queries by kind per pgsplit target, all blocks and protocols.
    awk -F, -v kinds="$KINDS" -v c_t="$(col target)" -v c_st="$(col statements)" -v c_sync="$(col synchronous_commit)" \
        -v c_proto="$(col protocol)" -v c_k0="$(col internal_login)" -v c_int="$(col internal_queries)" \
        -v c_status="$(col status)" -v c_dur="$(col duration_s)" '
        BEGIN { nk = split(kinds, kl, " ") }
        NR > 1 && $c_st != "" && $c_status == "ok" {
            key = sprintf("sc=%-3s -M %-8s %-9s", $c_sync, $c_proto, $c_t)
            if (!(key in seen)) { seen[key] = 1; keys[++m] = key }
            st[key] += $c_st; tot[key] += $c_int; secs[key] += $c_dur
            for (j = 1; j <= nk; j++) per[key, j] += $(c_k0 + j - 1)
        }
        END {
            if (m == 0) exit
            printf "\nInternal queries per client statement (pgsplit_internal_queries_total delta / pgsplit_statements_total\n"
            printf "delta on the read-write port), by kind; the health probes are not in that metric (see README)\n"
            printf "  %-32s %10s %9s", "block / target", "statements", "all"
            for (j = 1; j <= nk; j++) printf " %9s", kl[j]
            printf " %12s\n", "all per s"
            for (i = 1; i <= m; i++) {
                key = keys[i]
                printf "  %-32s %10d %9.4f", key, st[key], (st[key] > 0 ? tot[key] / st[key] : 0)
                for (j = 1; j <= nk; j++) printf " %9.4f", (st[key] > 0 ? per[key, j] / st[key] : 0)
                printf " %12.1f\n", (secs[key] > 0 ? tot[key] / secs[key] : 0)
            }
        }' "$CSV"
}

print_summary() {
    awk -F, -v c_sync="$(col synchronous_commit)" -v c_proto="$(col protocol)" -v c_t="$(col target)" \
        -v c_tps="$(col tps)" -v c_st="$(col statements)" -v c_int="$(col internal_queries)" \
        -v c_reads="$(col reads)" -v c_rr="$(col replica_reads)" -v c_status="$(col status)" \
        -v c_known="$(col ryw_known)" '
        NR > 1 && $c_status == "ok" {
            b = sprintf("sc=%-3s -M %-8s", $c_sync, $c_proto)
            if (!(b in seen)) { seen[b] = 1; blocks[++m] = b }
            k = b SUBSEP $c_t
            n[k]++; tps[k] += $c_tps
            if ($c_st != "") { st[k] += $c_st; int_[k] += $c_int; reads[k] += $c_reads; rr[k] += $c_rr
                for (j = 0; j < 5; j++) ryw[k, j] += $(c_known + j) }
        }
        function mean(k) { return n[k] > 0 ? tps[k] / n[k] : 0 }
        function mark(ok) { return ok ? "met" : "MISSED" }
        END {
            printf "\nTargets (lsn = consistency lsn with max_wait_ms 0, off = consistency off)\n"
            printf "  %-22s %14s %9s %16s %9s %18s %9s %18s\n", "block", "TPS lsn/off", ">= 0.95", "internal/st lsn", "<= 0.05",
                "replica% reads lsn", ">= 85%", "lsn-wait replica%"
            for (i = 1; i <= m; i++) {
                b = blocks[i]; l = b SUBSEP "lsn"; o = b SUBSEP "off"; w = b SUBSEP "lsn-wait"
                r = (mean(l) > 0 && mean(o) > 0) ? mean(l) / mean(o) : -1
                ip = st[l] > 0 ? int_[l] / st[l] : -1
                sh = reads[l] > 0 ? rr[l] * 100 / reads[l] : -1
                ws = reads[w] > 0 ? sprintf("%.1f", rr[w] * 100 / reads[w]) : "-"
                printf "  %-22s %14s %9s %16s %9s %18s %9s %18s\n", b, (r < 0 ? "-" : sprintf("%.3f", r)),
                    (r < 0 ? "-" : mark(r >= 0.95)), (ip < 0 ? "-" : sprintf("%.4f", ip)),
                    (ip < 0 ? "-" : mark(ip <= 0.05)), (sh < 0 ? "-" : sprintf("%.1f", sh)),
                    (sh < 0 ? "-" : mark(sh >= 85)), ws
            }
            printf "\nRead-your-writes outcomes (pgsplit_read_your_writes_total deltas, all rounds)\n"
            printf "  %-32s %10s %10s %16s %15s %15s\n", "block / target", "known", "waited", "primary_unknown",
                "primary_behind", "primary_window"
            for (i = 1; i <= m; i++) {
                b = blocks[i]
                split("lsn lsn-wait off", tl, " ")
                for (j = 1; j <= 3; j++) {
                    k = b SUBSEP tl[j]
                    if (!(k in st)) continue
                    printf "  %-32s %10d %10d %16d %15d %15d\n", b " " tl[j], ryw[k, 0], ryw[k, 1], ryw[k, 2], ryw[k, 3],
                        ryw[k, 4]
                }
            }
        }' "$CSV"
}

# ---------------------------------------------------------------------------
# The runs.
# ---------------------------------------------------------------------------
nb=$(wc -w <<<"$SYNC_COMMITS")
np=$(wc -w <<<"$PROTOCOLS")
nt=$(wc -w <<<"$TARGETS")
log "$nb blocks x $np protocols x $nt targets x $ROUNDS rounds x ${DURATION}s ≈ $((nb * np * nt * ROUNDS * (DURATION + 3) / 60 + 1)) min"

TABLES=""
SETTINGS_SEEN=""
for sync in $SYNC_COMMITS; do
    log "block: synchronous_commit = $sync on every node"
    set_cluster synchronous_commit "$sync"
    wait_replicas 60
    FSYNC_NOW=$(psql_pg "$PRIMARY_PORT" 'SHOW fsync')
    settings=$(cluster_settings)
    SETTINGS_SEEN+="  block $sync: $settings"$'\n'
    log "cluster settings: $settings"
    for proto in $PROTOCOLS; do
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in $TARGETS; do
                run_one "$sync" "$proto" "$round" "$target"
            done
        done
        table=$(print_block "$sync" "$proto")
        printf '%s\n' "$table" >&2
        TABLES+="$table"$'\n'
    done
done

echo
echo "=================================================================="
echo "read-your-writes benchmark: $(nproc) CPUs, primary + 2 replicas (streaming, asynchronous), scale $SCALE,"
echo "$CLIENTS clients, -j $JOBS, reads:writes $READ_WEIGHT:$WRITE_WEIGHT (autocommit), read-write port"
echo "cluster settings (every node), per block:"
printf '%s' "$SETTINGS_SEEN"
echo "pgsplit: lsn = [consistency] mode lsn, max_wait_ms 0; lsn-wait = the same with max_wait_ms $MAX_WAIT_MS;"
echo "off = mode off; poll_ms ${POLL_MS:-5 (default)}; worker_threads ${PGSPLIT_THREADS:-default}; pool: defaults"
echo "read50/read99 = p50/p99 of read.sql transactions (pgbench -l, pooled over rounds), ms;"
echo "replica% = reads served by a replica / reads (reads = statements with reason read, consistency or"
echo "no_replica); intern/st = internal queries / client statements; ryw kn/wt/unk/beh = read-your-writes"
echo "outcomes known/waited/primary_unknown/primary_behind; replay/write med/max = pg_stat_replication lag (ms)"
echo "sampled every ${LAG_INTERVAL}s (median of per-run medians / max)"
printf '%s' "$TABLES"
print_internal
print_summary
echo
echo "raw results: $CSV"
if ((FAILED_RUNS > 0)); then
    die "$FAILED_RUNS run(s) failed; see $LOGS"
fi
