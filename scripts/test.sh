#!/usr/bin/env bash
# The project's test command: every Rust test of the workspace (unit, integration over
# loopback HTTP and the real binaries, property tests, the fuzz corpus replayed, crash
# cycles, full-disk tests on tmpfs mounts, the store
# conformance suite and a cluster of nodes on a real PostgreSQL); then the JavaScript
# client's tests, its demo in headless Chromium included (scripts/js-test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
pg_dir=$(mktemp -d)
trap 'scripts/postgres.sh stop "$pg_dir/pg"; rm -rf "$log" "$pg_dir"' EXIT
# One PostgreSQL for every test binary (installed from the distribution when absent);
# tests that restart the database start their own.
KEYSERVICE_TEST_POSTGRES_URL=$(scripts/postgres.sh start "$pg_dir/pg" $$)
export KEYSERVICE_TEST_POSTGRES_URL
status=0
cargo test --locked --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole workspace (cargo prints one per test binary).
rust=$(awk '/^test result:/ { passed += $4; failed += $6 } END { printf "rust: %d passed, %d failed", passed, failed }' "$log")

js_status=0
scripts/js-test.sh 2>&1 | tee "$log" || js_status=$?
js=$(awk '/^ℹ pass/ { passed += $3 } /^ℹ fail/ { failed += $3 } END { printf "js: %d passed, %d failed", passed, failed }' "$log")
echo "$rust"
echo "$js"
if (( status == 0 )); then status=$js_status; fi
exit "$status"
