#!/usr/bin/env bash
# Init script for the compose primary (pg1). The official postgres image runs
# it once, from /docker-entrypoint-initdb.d/, while it initialises an empty
# data directory (as the postgres user, against a temporary server listening
# on the Unix socket only). It is written to work both when executed and when
# sourced (the image sources *.sh files that are not executable), so it never
# calls `exit` and changes no shell options.
#
# Environment (set in docker-compose.yml):
#   APP_DB_PASSWORD       password of the `app` role that pgsplit and clients use
#   REPLICATION_PASSWORD  password of the `replicator` role the replicas clone with
#   REPLICATION_CIDR      network the replicas connect from (the compose subnet)
#   REPLICA_SLOTS         physical replication slots to create, space-separated

: "${APP_DB_PASSWORD:?APP_DB_PASSWORD must be set}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD must be set}"
: "${REPLICATION_CIDR:?REPLICATION_CIDR must be set}"
: "${REPLICA_SLOTS:?REPLICA_SLOTS must be set}"

# Roles and the application database. psql interpolates :'var' as a quoted
# literal, so passwords need no escaping here.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v app_password="$APP_DB_PASSWORD" \
    -v repl_password="$REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE app LOGIN PASSWORD :'app_password';
CREATE DATABASE app OWNER app;
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'repl_password';
SQL

# One physical slot per replica, so the primary keeps the WAL a replica has not
# received yet (a stopped replica makes WAL pile up on pg1: drop its slot with
# SELECT pg_drop_replication_slot('NAME') if you remove it for good).
for slot in $REPLICA_SLOTS; do
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -v slot="$slot" <<'SQL'
SELECT pg_create_physical_replication_slot(:'slot');
SQL
done

# Streaming replication connections match only the `replication` keyword in
# pg_hba.conf (the image's `host all all all` line does not cover them).
# The image stops its temporary server after the init scripts; the real one
# then starts with this file.
echo "host replication replicator ${REPLICATION_CIDR} scram-sha-256" >> "$PGDATA/pg_hba.conf"
