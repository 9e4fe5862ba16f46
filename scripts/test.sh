#!/usr/bin/env bash
# Installs what the tests need on a fresh machine, then runs the whole test
# suite. Today the core pool needs nothing beyond the Rust toolchain; the
# database drivers will install and start their servers from here.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

cargo test --workspace --all-targets
cargo test --workspace --doc
