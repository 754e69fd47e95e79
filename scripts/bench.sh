#!/usr/bin/env bash
# The benchmark behind docs/benchmarks.md: release builds, then each scenario with the
# bare-hyper baseline, and GET at 10 k, 100 k and 1 M stored users. Every figure is the
# median of RUNS (default 3) measurements of DURATION seconds (default 10). The server
# runs as users run it (request log and audit on); one GET row with the request log off
# is labelled as such.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"
DURATION="${DURATION:-10}"
cargo build --release --locked -p keyservice -p keyservice-bench
bench=target/release/keyservice-bench
run() { "$bench" run --runs "$RUNS" --duration "$DURATION" --default-config "$@"; }

echo "== GET, 64 connections, with baseline";            run --scenario get --connections 64 --users 10000
echo "== GET, 64 connections, request log OFF (not the default)"
"$bench" run --runs "$RUNS" --duration "$DURATION" --scenario get --connections 64 --users 10000
echo "== mixed 90/10, 64 connections, with baseline";    run --scenario mixed --connections 64 --users 10000
echo "== durable PUT, 1 connection (one fsync per write)"; run --scenario put --connections 1 --users 1000
echo "== durable PUT, 64 connections (group commit)";    run --scenario put --connections 64 --users 1000
echo "== flow (init, connect, put, get), 64 connections"; run --scenario flow --connections 64 --users 1000
for users in 10000 100000 1000000; do
  echo "== GET with $users users stored";                run --scenario get --connections 64 --users "$users" --no-baseline
done

# The same scenarios on PostgreSQL, one node and three sharing it (a throwaway server
# from scripts/postgres.sh on this machine), beside sled in the same run.
if [[ "${BENCH_POSTGRES:-1}" == 1 ]]; then
  pg_dir=$(mktemp -d)
  trap 'scripts/postgres.sh stop "$pg_dir/pg"; rm -rf "$pg_dir"' EXIT
  pg_url=$(scripts/postgres.sh start "$pg_dir/pg" $$)
  for scenario in get put flow; do
    echo "== $scenario on sled, 64 connections";          run --scenario "$scenario" --connections 64 --users 1000 --no-baseline
    for nodes in 1 3; do
      echo "== $scenario on PostgreSQL, $nodes node(s), 64 connections"
      run --scenario "$scenario" --connections 64 --users 1000 --no-baseline --postgres "$pg_url" --nodes "$nodes"
    done
  done
fi
