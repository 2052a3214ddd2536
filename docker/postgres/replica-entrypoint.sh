#!/usr/bin/env bash
# Entrypoint for the compose replicas (pg2, pg3), on the official postgres
# image. On the first start (empty data directory) it waits for the primary,
# clones it with pg_basebackup into $PGDATA (-R writes standby.signal and
# primary_conninfo, -S streams through the replica's own slot) and then hands
# over to the image's own docker-entrypoint.sh, which finds an existing cluster,
# skips initdb and execs postgres as the postgres user.
#
# Environment (set in docker-compose.yml):
#   PRIMARY_HOST          host name of the primary (pg1)
#   PRIMARY_PORT          its port (default 5432)
#   REPLICATION_USER      role with REPLICATION (default replicator)
#   REPLICATION_PASSWORD  its password
#   REPLICATION_SLOT      the physical slot pg1's init script created for this replica
#
# Compose runs it as `bash /usr/local/bin/replica-entrypoint.sh postgres ...`,
# so it does not depend on the file's executable bit.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${PRIMARY_HOST:?PRIMARY_HOST must be set}"
: "${PRIMARY_PORT:=5432}"
: "${REPLICATION_USER:=replicator}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
: "${REPLICATION_SLOT:?REPLICATION_SLOT must be set}"

# As root (the image's default user): prepare the data directory for the
# postgres user, then run the rest of this script as postgres, the same way
# the image's own entrypoint drops privileges.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    exec gosu postgres bash "${BASH_SOURCE[0]}" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -n "$(ls -A "$PGDATA")" ]; then
        echo "replica-entrypoint: $PGDATA is neither empty nor a cluster; refusing to touch it" >&2
        exit 1
    fi
    echo "replica-entrypoint: waiting for the primary at ${PRIMARY_HOST}:${PRIMARY_PORT}" >&2
    until pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -d postgres; do
        sleep 1
    done
    echo "replica-entrypoint: cloning ${PRIMARY_HOST} through slot ${REPLICATION_SLOT}" >&2
    # On failure pg_basebackup removes what it wrote, so the next start retries.
    PGPASSWORD="$REPLICATION_PASSWORD" pg_basebackup \
        -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" \
        -D "$PGDATA" -R -X stream -S "$REPLICATION_SLOT" \
        --checkpoint=fast --no-password
    chmod 0700 "$PGDATA"
    echo "replica-entrypoint: clone done; starting as a streaming replica" >&2
fi

exec docker-entrypoint.sh "$@"
