#!/usr/bin/env bash
# The JavaScript client's tests: its ss1 vectors and calls against the real server
# (node --test), its type declarations (tsc), and the demo web app clicked through in
# headless Chromium (playwright-core driving the distribution's chromium; no browser
# download). Installs what is missing: Chromium from the distribution's packages, the
# npm dev dependencies from the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if (( node_major < 20 )); then
    echo "js-test.sh: Node.js 20 or later is needed (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
fi
if ! command -v chromium >/dev/null; then
    scripts/install-package.sh chromium Chromium
fi
(cd clients/js && npm ci --no-audit --no-fund --loglevel=error)
cargo build --locked -q -p keyservice -p keyservice-examples --bin keyservice --example demo

export CHROMIUM="${CHROMIUM:-$(command -v chromium)}"
cd clients/js
# The checked-in self-contained build must be what the source builds to.
checked_in=$(mktemp)
trap 'rm -f "$checked_in"' EXIT
cp dist/keyservice.js "$checked_in"
npm run --silent build >/dev/null 2>&1
if ! cmp -s dist/keyservice.js "$checked_in"; then
    cp "$checked_in" dist/keyservice.js
    echo "js-test.sh: clients/js/dist/keyservice.js does not match src/; run 'npm run build' in clients/js and commit it" >&2
    exit 1
fi
npx --no-install tsc -p tsconfig.json
node --test --test-reporter=spec --test-reporter-destination=stdout test/*.test.js test/browser/*.test.js
