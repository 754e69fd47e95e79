#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 60 s each; FUZZ_SECONDS to change),
# starting from the seed corpus in fuzz/corpus. Needs cargo-fuzz and a nightly
# toolchain (libFuzzer's sanitizer flags); without them it says so and exits 0, since
# the property tests (keyservice/tests/parser_properties.rs) cover the same entry
# points on stable. A crash leaves its input under fuzz/artifacts/<target>/: add it
# as a regression case to the property tests.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-60}"

if ! cargo fuzz --version >/dev/null 2>&1 || ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz with a nightly toolchain is not available; the property tests cover the parsers instead"
  exit 0
fi

for target in $(cargo +nightly fuzz list); do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "corpus/$target"
  cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds"
done
echo "fuzz: no crash"
