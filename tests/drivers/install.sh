#!/usr/bin/env bash
# Installs the client drivers used by tests/drivers.rs; does nothing for a
# driver that is already there. Safe to run any number of times.
#   psycopg 3, asyncpg  -> pip, pinned in requirements.txt
#   pg, pg-copy-streams -> npm ci, pinned in package-lock.json (node_modules/ here)
#   PgJDBC              -> Debian: libpostgresql-jdbc-java (/usr/share/java/postgresql.jar)
#                          and a JDK (javac: the single-file launcher compiles the check)
#   pgx v4              -> Debian: golang-go and golang-github-jackc-pgx-v4-dev
#                          (sources under /usr/share/gocode, built offline in GOPATH mode)
# PYTHON selects the interpreter (default python3), as in tests/drivers.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}

python_has() {
    "$PYTHON" -c "import $1" 2>/dev/null
}

if python_has psycopg && python_has asyncpg; then
    echo "drivers: psycopg $("$PYTHON" -c 'import psycopg; print(psycopg.__version__)')" \
        "and asyncpg $("$PYTHON" -c 'import asyncpg; print(asyncpg.__version__)') already installed"
else
    echo "drivers: installing psycopg and asyncpg (requirements.txt)"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    # An externally managed (distribution) Python refuses plain installs.
    "$PYTHON" -m pip install --quiet -r requirements.txt ||
        "$PYTHON" -m pip install --quiet --break-system-packages -r requirements.txt
    for module in psycopg asyncpg; do
        python_has "$module" || { echo "drivers: $module still not importable" >&2; exit 1; }
    done
fi

if [ -f node_modules/pg/package.json ] && [ -f node_modules/pg-copy-streams/package.json ]; then
    echo "drivers: node_modules already installed"
else
    echo "drivers: installing pg and pg-copy-streams (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
fi

# Debian packages: collect what is missing, then one apt-get run.
missing=()
[ -f /usr/share/java/postgresql.jar ] || missing+=(libpostgresql-jdbc-java)
command -v javac >/dev/null || missing+=(default-jdk-headless)
command -v go >/dev/null || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/jackc/pgx/v4 ] || missing+=(golang-github-jackc-pgx-v4-dev)
if [ ${#missing[@]} -eq 0 ]; then
    echo "drivers: PgJDBC, a JDK, Go and pgx v4 already installed"
else
    echo "drivers: installing ${missing[*]} (apt-get)"
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
