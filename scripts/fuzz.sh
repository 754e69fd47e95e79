#!/usr/bin/env bash
# Runs every fuzz target from its committed corpus (fuzz/corpus/<target>) with libFuzzer,
# through cargo-fuzz on the installed stable toolchain (RUSTC_BOOTSTRAP=1 lets it use the
# sanitizer flags it needs). Installs the pinned cargo-fuzz when it is absent.
#
#   scripts/fuzz.sh [SECONDS]   long run: release build with AddressSanitizer, SECONDS
#                               per target (default 300), new inputs kept in the corpus
#   scripts/fuzz.sh --smoke     a quick check: a debug build without
#                               a sanitizer (the code has no unsafe), FUZZ_SECONDS per
#                               target (default 5), the corpus left as committed
#
# A crash, panic or timeout fails the run (exit 1) and leaves the input under
# fuzz/artifacts/<target>/: turn it into a regression case in
# keyservice/tests/parser_properties.rs. Minimise the corpus after a long run with
# `RUSTC_BOOTSTRAP=1 cargo fuzz cmin <target>` (from fuzz/) before committing it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.1

if [ "$(cargo fuzz --version 2>/dev/null | awk '{print $2}')" != "$CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

if [ "${1:-}" = "--smoke" ]; then
  seconds="${FUZZ_SECONDS:-5}"
  build=(--dev --sanitizer none)
  keep_new=0
else
  seconds="${1:-300}"
  build=(--release)
  keep_new=1
fi

targets=$(cargo fuzz list)
cargo fuzz build "${build[@]}"
passed=0
failed=0
for target in $targets; do
  mkdir -p "corpus/$target" "artifacts/$target"
  if [ "$keep_new" = 1 ]; then
    corpus=("corpus/$target")
  else
    # New inputs go to a scratch directory; the committed seeds are only read.
    scratch=$(mktemp -d)
    corpus=("$scratch" "corpus/$target")
  fi
  log=$(mktemp)
  if cargo fuzz run "${build[@]}" "$target" "${corpus[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="artifacts/$target/" >"$log" 2>&1; then
    runs=$(grep -Eo 'Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo "?")
    echo "fuzz: $target: $runs runs in ${seconds}s, no crash"
    passed=$((passed + 1))
  else
    echo "fuzz: $target FAILED; the input is under fuzz/artifacts/$target/"
    tail -40 "$log"
    failed=$((failed + 1))
  fi
  rm -f "$log"
  [ "$keep_new" = 1 ] || rm -rf "$scratch"
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
