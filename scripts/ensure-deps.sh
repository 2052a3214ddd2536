#!/usr/bin/env bash
# Installs what pgsplit's demo and tests need when it is missing, on a fresh
# Debian/Ubuntu machine: PostgreSQL (server binaries and psql), libclang,
# which the pg_query crate's build (bindgen) needs, and Chromium for the
# status page's browser test. Idempotent.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ -z "${PGSPLIT_PG_BIN:-}" ]; then
    missing+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || missing+=(postgresql-contrib)
# Headless Chromium for the status page's browser test (tests/status_page.rs).
command -v "${PGSPLIT_CHROMIUM:-chromium}" >/dev/null 2>&1 || missing+=(chromium)
# libclang itself (libclang.so / libclang-N.so), not libclang-cpp, which
# some images carry without it.
if ! ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 \
    && ! ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so' \
    && [ -z "${LIBCLANG_PATH:-}" ]; then
    missing+=(libclang-dev)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    echo "ensure-deps: installing ${missing[*]}" >&2
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "ensure-deps: cargo is missing; install Rust from your distribution or rustup first" >&2
    exit 1
fi
