#!/usr/bin/env bash
# The full crash-safety run: concurrent PUTs against the real binary, SIGKILL at random
# moments, restart, verify every acknowledged write. CRASH_CYCLES sets the number of
# cycles (default 20). Prints: cycles, acknowledged writes, lost, corrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
CRASH_CYCLES="${CRASH_CYCLES:-20}" cargo test --release --locked -p keyservice --test crash -- --ignored --nocapture
