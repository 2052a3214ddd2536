# shellcheck shell=bash
# Helpers shared by the pgbench-based benchmarks (pgbench.sh, split.sh,
# pool.sh, ryw.sh).
# Sourced, not run. The caller defines log() and die() and the variables the
# helpers name (TAKEN_PORTS for free_port, PSQL for wait_sql).

alive() {
    # A pid counts as alive unless gone or a zombie.
    local pid=$1 stat
    [[ -n $pid ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

stop_pid() {
    # stop_pid PID SECONDS: SIGTERM, wait, then SIGKILL.
    local pid=$1 secs=$2 i
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "pid $pid did not stop after ${secs}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

free_port() {
    # free_port VAR: a TCP port no socket uses, not handed out before.
    local p
    for _ in $(seq 1000); do
        p=$((PORT_LOW + (RANDOM * 32768 + RANDOM) % (PORT_HIGH - PORT_LOW + 1)))
        [[ $TAKEN_PORTS == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "sport = :$p") ]]; then
            TAKEN_PORTS+="$p "
            printf -v "$1" '%s' "$p"
            return 0
        fi
    done
    die "no free port found"
}

cpu_ticks() {
    # utime + stime (fields 14 and 15 of /proc/PID/stat) of the whole process,
    # in clock ticks. The comm field may hold spaces, so cut after its ')'.
    local stat f
    stat=$(cat "/proc/$1/stat") || return 1
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

wait_sql() {
    # wait_sql NAME PORT SECONDS: until `SELECT 1` works as app on db app.
    local name=$1 port=$2 secs=$3 i
    for ((i = 0; i < secs * 5; i++)); do
        if PGPASSWORD=app PGCONNECT_TIMEOUT=2 "$PSQL" -X -q -At -h 127.0.0.1 -p "$port" \
            -U app -d app -c 'SELECT 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    die "$name on port $port did not accept SQL within ${secs}s"
}

# ---------------------------------------------------------------------------
# The cluster, the proxies and their numbers. These use the globals the
# scripts share: WORK (work dir), PGSPLIT (the copied binary), PSQL, PGBENCH,
# PRIMARY_PORT, REPLICA_PORTS, NODE_PORTS (from the testbed's cluster.env),
# PGSPLIT_PID / PGSPLIT_PORT / PGSPLIT_ADMIN (associative arrays by target),
# PGBOUNCER, PGBOUNCER_PORT, PGBOUNCER_PID, PGBOUNCER_REAL, TESTBED_PID.
# ---------------------------------------------------------------------------

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

metric_delta() {
    # metric_delta BEFORE AFTER NAME [LABEL=VALUE...]: the sum in AFTER minus
    # the sum in BEFORE.
    local before=$1 after=$2
    shift 2
    awk -v a="$(metric "$after" "$@")" -v b="$(metric "$before" "$@")" 'BEGIN { printf "%.9g", a - b }'
}

label_values() {
    # label_values FILE NAME LABEL: the distinct values LABEL takes in the
    # samples of NAME, one per line.
    awk -v name="$2" -v label="$3" '
        /^#/ { next }
        index($1, name "{") == 1 && match($1, label "=\"[^\"]*\"") {
            v = substr($1, RSTART + length(label) + 2, RLENGTH - length(label) - 3)
            if (!(v in seen)) { seen[v] = 1; print v }
        }' "$1"
}

rss_kib() {
    # rss_kib PID: resident set size (VmRSS) in KiB.
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

build_pgsplit() {
    # Builds the release binary unless PGSPLIT_BIN names one; sets PGSPLIT_BIN.
    if [[ -z $PGSPLIT_BIN ]]; then
        log "building pgsplit (release)"
        cargo build --release --quiet
        PGSPLIT_BIN=${CARGO_TARGET_DIR:-target}/release/pgsplit
    fi
    [[ -x $PGSPLIT_BIN ]] || die "no pgsplit binary at $PGSPLIT_BIN"
}

ensure_pgbouncer() {
    # Sets PGBOUNCER, installing the package with apt-get when missing.
    PGBOUNCER=$(command -v pgbouncer || true)
    if [[ -z $PGBOUNCER ]]; then
        log "pgbouncer missing: apt-get install -y pgbouncer"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
        PGBOUNCER=$(command -v pgbouncer) || die "pgbouncer still missing"
    fi
}

start_testbed() {
    # start_testbed REPLICAS [CONF_LINE...]: `pgsplit testbed` in the
    # background (postgresql.conf lines passed with --conf), then the
    # cluster's ports and paths from its cluster.env. Sets TESTBED_PID,
    # PRIMARY_PORT, REPLICA_PORTS, NODE_PORTS, PG_BIN, CLUSTER_DIR, PGBENCH,
    # PSQL.
    local replicas=$1 line i
    shift
    local args=(testbed --dir "$WORK/testbed" --replicas "$replicas")
    for line in "$@"; do args+=(--conf "$line"); done
    mkdir -p "$WORK/testbed"
    "$PGSPLIT" "${args[@]}" >"$WORK/testbed.log" 2>&1 &
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
    [[ $(wc -w <<<"$REPLICA_PORTS") == "$replicas" ]] ||
        die "expected $replicas replicas, got ports '$REPLICA_PORTS'"
}

stop_testbed() {
    # The testbed stops its servers and removes its cluster dir on SIGTERM.
    [[ -n $TESTBED_PID ]] || return 0
    stop_pid "$TESTBED_PID" 60
    # Its initdb template is left behind by design (see the test bed crate,
    # testbed/); it is named after the testbed's pid, so remove exactly that
    # one.
    alive "$TESTBED_PID" || rm -rf "${TMPDIR:-/tmp}/pgsplit-testbed-template-$TESTBED_PID-"*
}

cluster_settings() {
    # One line: the settings that decide what a commit costs, as the primary
    # reports them, e.g. "fsync=off synchronous_commit=on full_page_writes=off".
    local name out=""
    for name in fsync synchronous_commit full_page_writes; do
        out+="$name=$(psql_pg "$PRIMARY_PORT" "SHOW $name") "
    done
    echo "${out% }"
}

set_cluster() {
    # set_cluster NAME VALUE: ALTER SYSTEM + pg_reload_conf() on every node,
    # then checks that every node reports VALUE (reloadable settings only).
    local name=$1 value=$2 port i
    for port in $NODE_PORTS; do
        psql_pg "$port" "ALTER SYSTEM SET $name = '$value'" >/dev/null
        psql_pg "$port" "SELECT pg_reload_conf()" >/dev/null
    done
    for port in $NODE_PORTS; do
        for ((i = 0; i < 50; i++)); do
            [[ $(psql_pg "$port" "SHOW $name") == "$value" ]] && break
            sleep 0.1
        done
        [[ $(psql_pg "$port" "SHOW $name") == "$value" ]] || die "node on port $port: $name is not $value"
    done
}

pgsplit_toml() {
    # pgsplit_toml RW RO ADMIN EXTRA: a pgsplit configuration with every
    # testbed node as a backend and user app, EXTRA (TOML sections) between.
    local rw=$1 ro=$2 admin=$3 extra=$4 i=0 port
    cat <<EOT
[listen]
read_write = "127.0.0.1:$rw"
read_only = "127.0.0.1:$ro"
admin = "127.0.0.1:$admin"
EOT
    [[ -n $extra ]] && printf '\n%s\n' "$extra"
    for port in $NODE_PORTS; do
        i=$((i + 1))
        printf '\n[[backends]]\nname = "pg%d"\naddress = "127.0.0.1:%s"\n' "$i" "$port"
    done
    printf '\n[[users]]\nname = "app"\npassword = "app"\n'
}

# shellcheck disable=SC2004 # PGSPLIT_* are associative arrays (the caller's)
start_pgsplit() {
    # start_pgsplit TARGET EXTRA: one pgsplit process on free ports, its
    # configuration pgsplit_toml's with EXTRA. Sets PGSPLIT_PID[TARGET],
    # PGSPLIT_PORT[TARGET], PGSPLIT_ADMIN[TARGET]. Does not wait for it.
    local target=$1 extra=$2 rw ro admin
    free_port rw
    free_port ro
    free_port admin
    pgsplit_toml "$rw" "$ro" "$admin" "$extra" >"$WORK/$target.toml"
    "$PGSPLIT" --config "$WORK/$target.toml" --check >/dev/null 2>"$WORK/$target.check" || {
        cat "$WORK/$target.check" >&2
        die "$target: pgsplit refuses its configuration $WORK/$target.toml"
    }
    log "starting $target on 127.0.0.1:$rw (admin $admin)"
    "$PGSPLIT" --config "$WORK/$target.toml" >"$WORK/$target.log" 2>&1 &
    PGSPLIT_PID[$target]=$!
    PGSPLIT_PORT[$target]=$rw
    PGSPLIT_ADMIN[$target]=$admin
}

wait_pgsplit() {
    # wait_pgsplit TARGET: until it takes SQL, every replica is in read
    # rotation and a provable read on its read-write port runs on a replica.
    local target=$1 i ran_on nrep
    nrep=$(wc -w <<<"$REPLICA_PORTS")
    wait_sql "$target" "${PGSPLIT_PORT[$target]}" 30
    for ((i = 0; i < 150; i++)); do
        scrape "$target" "$WORK/metrics.txt"
        [[ $(metric "$WORK/metrics.txt" pgsplit_backend_in_rotation) == "$nrep" ]] && break
        sleep 0.2
    done
    [[ $(metric "$WORK/metrics.txt" pgsplit_backend_in_rotation) == "$nrep" ]] ||
        die "$target: the replicas did not enter read rotation within 30s"
    ((nrep > 0)) || return 0
    # inet_server_port() is a read pgsplit lets a replica answer (unlike
    # pg_is_in_recovery(), a question about the session's server that goes to
    # the primary), and it says which node answered.
    ran_on=$(PGPASSWORD=app "$PSQL" -X -q -At -h 127.0.0.1 -p "${PGSPLIT_PORT[$target]}" \
        -U app -d app -c 'SELECT inet_server_port()')
    [[ " $REPLICA_PORTS " == *" $ran_on "* ]] ||
        die "$target: a read on the read-write port ran on port '$ran_on', not on a replica"
}

start_pgbouncer() {
    # start_pgbouncer POOL_SIZE MAX_CLIENT_CONN: PgBouncer in transaction
    # mode in front of the primary, SCRAM client auth from a plain-text
    # auth_file. It refuses to run as root, so it runs as postgres from a dir
    # it owns. Sets PGBOUNCER_PORT, PGBOUNCER_PID (the runuser wrapper) and
    # PGBOUNCER_REAL (pgbouncer itself). The caller sets `ulimit -n` high
    # enough for MAX_CLIENT_CONN first.
    local pool=$1 max_clients=$2 pb="$WORK/pgbouncer" i
    free_port PGBOUNCER_PORT
    mkdir -p "$pb"
    cat >"$pb/pgbouncer.ini" <<EOT
[databases]
app = host=127.0.0.1 port=$PRIMARY_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
listen_backlog = 4096
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $pb/userlist.txt
pool_mode = transaction
default_pool_size = $pool
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $max_clients
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
server_tls_sslmode = disable
client_tls_sslmode = disable
logfile = $pb/pgbouncer.log
pidfile = $pb/pgbouncer.pid
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 3600
EOT
    printf '"app" "app"\n' >"$pb/userlist.txt"
    chown -R postgres: "$pb"
    chmod 600 "$pb/userlist.txt"
    log "starting PgBouncer $("$PGBOUNCER" --version | head -1 | awk '{print $2}') on 127.0.0.1:$PGBOUNCER_PORT (pool $pool, max_client_conn $max_clients)"
    # runuser's PAM session (pam_limits) sets the soft open-files limit back
    # to its default (1024), so raise it again as postgres, up to the hard
    # limit, before PgBouncer starts.
    # shellcheck disable=SC2016 # expanded by that sh
    runuser -u postgres -- sh -c 'ulimit -n "$1" && exec "$2" "$3"' sh "$(ulimit -n)" \
        "$PGBOUNCER" "$pb/pgbouncer.ini" >"$pb/stderr.log" 2>&1 &
    PGBOUNCER_PID=$!
    for ((i = 0; i < 100; i++)); do
        [[ -s $pb/pgbouncer.pid ]] && break
        alive "$PGBOUNCER_PID" || {
            cat "$pb/stderr.log" "$pb/pgbouncer.log" >&2 2>/dev/null
            die "pgbouncer exited"
        }
        sleep 0.1
    done
    PGBOUNCER_REAL=$(tr -dc 0-9 <"$pb/pgbouncer.pid")
    alive "$PGBOUNCER_REAL" || die "no pgbouncer pid"
    log "PgBouncer may open $(awk '/^Max open files/ { print $4 }' "/proc/$PGBOUNCER_REAL/limits") files"
    wait_sql pgbouncer "$PGBOUNCER_PORT" 30
}

# shellcheck disable=SC2034 # the PB_* variables are the caller's to read
pgbench_result() {
    # pgbench_result LOGFILE: sets PB_TPS (without initial connection time),
    # PB_LAT (ms), PB_CONN (initial connection time, ms), PB_TXNS, PB_FAILED
    # ("number of failed transactions", PG15) and PB_ABORTED (clients that
    # aborted on an error; pgbench prints one line for each).
    local file=$1
    PB_TPS=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p' "$file")
    PB_LAT=$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$file")
    PB_CONN=$(sed -n 's/^initial connection time = \([0-9.]*\) ms.*/\1/p' "$file")
    PB_TXNS=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$file")
    PB_FAILED=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$file")
    PB_FAILED=${PB_FAILED:-0}
    PB_ABORTED=$(grep -cE 'client [0-9]+ (script [0-9]+ )?aborted' "$file" || true)
}

stop_started() {
    # Stops every process the helpers above started, newest first.
    local t
    for t in "${!PGSPLIT_PID[@]}"; do
        stop_pid "${PGSPLIT_PID[$t]}" 10
    done
    stop_pid "$PGBOUNCER_REAL" 10
    stop_pid "$PGBOUNCER_PID" 5
    stop_testbed
}
