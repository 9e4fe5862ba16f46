#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, then runs the whole test
# suite. On Debian or Ubuntu it installs the missing packages with apt-get
# (as root, or through sudo): postgresql, pgbouncer, mariadb-server,
# chromium, chromium-driver. Elsewhere, install PostgreSQL, PgBouncer,
# MariaDB, Chromium and chromedriver by hand first. Database tests start their own throwaway servers (aquifer-testkit)
# from the installed server binaries; nothing has to be running beforehand.
# The dashboard test drives Debian's Chromium through chromedriver.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

# Debian package names of what the tests need, checked by a file each.
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
{ command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; } &&
    command -v mariadb-install-db >/dev/null 2>&1 || need+=(mariadb-server)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if ((${#need[@]})) && ! command -v apt-get >/dev/null 2>&1; then
    echo "missing ${need[*]} and no apt-get here: install PostgreSQL, PgBouncer, MariaDB, Chromium and chromedriver by hand" >&2
    exit 1
fi
if ((${#need[@]})); then
    echo "installing with apt-get: ${need[*]}"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "missing ${need[*]}; run as root or install them with apt-get" >&2
            exit 1
        fi
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

cargo test --workspace --all-targets --all-features --no-fail-fast
cargo test --workspace --doc --all-features
