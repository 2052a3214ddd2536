#!/usr/bin/env bash
# Installs the client drivers used by tests/drivers.rs; does nothing for a
# driver that is already there. Safe to run any number of times.
#   psycopg 3         -> pip, pinned in requirements.txt
#   pg, pg-copy-streams -> npm ci, pinned in package-lock.json (node_modules/ here)
# PYTHON selects the interpreter (default python3), as in tests/drivers.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python3}

if "$PYTHON" -c 'import psycopg' 2>/dev/null; then
    echo "drivers: psycopg $("$PYTHON" -c 'import psycopg; print(psycopg.__version__)') already installed"
else
    echo "drivers: installing psycopg (requirements.txt)"
    export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
    # An externally managed (distribution) Python refuses plain installs.
    "$PYTHON" -m pip install --quiet -r requirements.txt ||
        "$PYTHON" -m pip install --quiet --break-system-packages -r requirements.txt
    "$PYTHON" -c 'import psycopg' || { echo "drivers: psycopg still not importable" >&2; exit 1; }
fi

if [ -f node_modules/pg/package.json ] && [ -f node_modules/pg-copy-streams/package.json ]; then
    echo "drivers: node_modules already installed"
else
    echo "drivers: installing pg and pg-copy-streams (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
fi
