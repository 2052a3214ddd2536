# Helpers shared by the pgbench-based benchmarks (pgbench.sh, split.sh).
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
