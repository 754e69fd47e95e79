#!/usr/bin/env bash
# The soak: 60 s of mixed traffic at 64 connections against the real binary; fails on
# any error, RSS growth beyond 10 % after warm-up, or leaking file descriptors.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p keyservice -p keyservice-bench
target/release/keyservice-bench soak --duration "${SOAK_SECONDS:-60}" --connections "${SOAK_CONNECTIONS:-64}"
