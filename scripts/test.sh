#!/usr/bin/env bash
# The project's test command: the fuzz targets briefly from their corpus, then every
# Rust test of the workspace (unit, integration over loopback HTTP and the real
# binaries, property tests, crash cycles, full-disk tests on tmpfs mounts).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fuzz.sh --smoke

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "rust: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
