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
    local rc=$? t
    set +e
    trap - EXIT INT TERM
    for t in "${!PGSPLIT_PID[@]}"; do
        stop_pid "${PGSPLIT_PID[$t]}" 10
    done
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

psql_pg() {
    # psql_pg PORT SQL: one value, as the postgres superuser (trust on loopback).
    "$PSQL" -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d app -c "$2"
}

wait_replicas() {
    # wait_replicas SECONDS: until every replica has replayed the primary's
    # current WAL position.
    local secs=$1 target port i ok
    target=$(psql_pg "$PRIMARY_PORT" 'SELECT pg_current_wal_lsn()')
    for port in $REPLICA_PORTS; do
        ok=0
        for ((i = 0; i < secs * 20; i++)); do
            if [[ $(psql_pg "$port" "SELECT pg_last_wal_replay_lsn() >= '$target'::pg_lsn") == t ]]; then
                ok=1
                break
            fi
            sleep 0.05
        done
        ((ok)) || die "replica on port $port did not replay up to $target within ${secs}s"
    done
}

scrape() {
    # scrape TARGET FILE: pgsplit's /metrics (Prometheus text) into FILE.
    curl -fsS --max-time 5 "http://127.0.0.1:${PGSPLIT_ADMIN[$1]}/metrics" >"$2" ||
        die "could not read /metrics of $1 (port ${PGSPLIT_ADMIN[$1]})"
}

metric() {
    # metric FILE NAME [LABEL=VALUE...]: sum of the samples of NAME whose
    # labels include all the given ones (0 if none).
    local file=$1 name=$2
    shift 2
    awk -v name="$name" -v want="$*" '
        BEGIN { n = split(want, w, " ") }
        /^#/ { next }
        {
            sample = $1
            labels = ""
            i = index(sample, "{")
            if (i > 0) { labels = substr(sample, i); sample = substr(sample, 1, i - 1) }
            if (sample != name) next
            for (j = 1; j <= n; j++) {
                split(w[j], kv, "=")
                if (index(labels, kv[1] "=\"" kv[2] "\"") == 0) next
            }
            sum += $NF
        }
        END { printf "%.9g\n", sum + 0 }' "$file"
}

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

WORK=$(mktemp -d /tmp/pgsplit-bench-split.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/testbed" "$OUT" "$LOGS"
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
"$PGSPLIT" testbed --dir "$WORK/testbed" --replicas 2 \
    --conf "max_connections = $MAX_CONNECTIONS" >"$WORK/testbed.log" 2>&1 &
TESTBED_PID=$!
for ((i = 0; i < 900; i++)); do
    [[ -s $WORK/testbed/cluster.env ]] && break
    if ! alive "$TESTBED_PID"; then
        cat "$WORK/testbed.log" >&2
        die "the testbed exited before the cluster came up"
    fi
    sleep 0.2
done
[[ -s $WORK/testbed/cluster.env ]] || die "no cluster.env after 180s"
sleep 0.2 # the file is written in one go, but be kind to slow disks
# shellcheck disable=SC1091
source "$WORK/testbed/cluster.env"
PGBENCH="$PG_BIN/pgbench"
PSQL="$PG_BIN/psql"
[[ -x $PGBENCH ]] || PGBENCH=$(command -v pgbench)
[[ -x $PSQL ]] || PSQL=$(command -v psql)
TAKEN_PORTS+="$NODE_PORTS "
[[ $(wc -w <<<"$REPLICA_PORTS") == 2 ]] || die "expected 2 replicas, got ports '$REPLICA_PORTS'"
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
pgsplit_config() {
    # pgsplit_config TARGET RW RO ADMIN: the TOML for one pgsplit target.
    local target=$1 rw=$2 ro=$3 admin=$4 i=0 port
    cat <<EOF
[listen]
read_write = "127.0.0.1:$rw"
read_only = "127.0.0.1:$ro"
admin = "127.0.0.1:$admin"
EOF
    case $target in
    pgsplit) ;;
    pgsplit-nocache) printf '\n[routing]\nclassify_cache = 0\n' ;;
    pgsplit-off) printf '\n[consistency]\nmode = "off"\n' ;;
    pgsplit-window) printf '\n[consistency]\nmode = "window"\n' ;;
    esac
    if [[ -n $PGSPLIT_THREADS ]]; then
        printf '\n[runtime]\nworker_threads = %s\n' "$PGSPLIT_THREADS"
    fi
    for port in $NODE_PORTS; do
        i=$((i + 1))
        printf '\n[[backends]]\nname = "pg%d"\naddress = "127.0.0.1:%s"\n' "$i" "$port"
    done
    printf '\n[[users]]\nname = "app"\npassword = "app"\n'
}

for target in $TARGETS; do
    is_pgsplit "$target" || continue
    free_port rw
    free_port ro
    free_port admin
    # shellcheck disable=SC2154 # set by free_port
    pgsplit_config "$target" "$rw" "$ro" "$admin" >"$WORK/$target.toml"
    log "starting $target on 127.0.0.1:$rw (admin $admin, worker_threads ${PGSPLIT_THREADS:-default})"
    "$PGSPLIT" --config "$WORK/$target.toml" >"$WORK/$target.log" 2>&1 &
    PGSPLIT_PID[$target]=$!
    PGSPLIT_PORT[$target]=$rw
    PGSPLIT_ADMIN[$target]=$admin
done
for target in "${!PGSPLIT_PID[@]}"; do
    wait_sql "$target" "${PGSPLIT_PORT[$target]}" 30
    # Both replicas must be in read rotation before anything is measured.
    for ((i = 0; i < 150; i++)); do
        scrape "$target" "$WORK/metrics.txt"
        [[ $(metric "$WORK/metrics.txt" pgsplit_backend_in_rotation) == 2 ]] && break
        sleep 0.2
    done
    [[ $(metric "$WORK/metrics.txt" pgsplit_backend_in_rotation) == 2 ]] ||
        die "$target: the replicas did not enter read rotation within 30s"
    # A provable read on the read-write port must reach a replica.
    in_recovery=$(PGPASSWORD=app "$PSQL" -X -q -At -h 127.0.0.1 -p "${PGSPLIT_PORT[$target]}" \
        -U app -d app -c 'SELECT pg_is_in_recovery()')
    [[ $in_recovery == t ]] || die "$target: a read on the read-write port did not go to a replica"
done

# ---------------------------------------------------------------------------
# PgBouncer: refuses to run as root, so it runs as postgres from a dir it owns.
# ---------------------------------------------------------------------------
if [[ $TARGETS == *pgbouncer* ]]; then
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
max_client_conn = $((max_clients + 100))
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

metric_delta() {
    # metric_delta BEFORE AFTER NAME [LABEL=VALUE...]: the sum in AFTER minus
    # the sum in BEFORE.
    local before=$1 after=$2
    shift 2
    awk -v a="$(metric "$after" "$@")" -v b="$(metric "$before" "$@")" 'BEGIN { printf "%.9g", a - b }'
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
        ryw_r=$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=replica)
        ryw_p=$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=primary)
        ryw_w=$(metric_delta "$mb" "$ma" pgsplit_read_your_writes_total outcome=waited)
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
