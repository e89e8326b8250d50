#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts the real backends the tests talk
# to (moto for S3, fakesnow for Snowflake, the Python SDK clients), installs Prometheus (promtool
# and the server a test scrapes Sluice with) and Chromium with playwright-core (the dashboard's
# browser test), runs every test, stops the backends.
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep build artifacts outside the checkout so a fresh clone reuses an earlier build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}
scripts/backends.sh start
trap 'scripts/backends.sh stop' EXIT
eval "$(scripts/backends.sh env)"
scripts/prometheus.sh check          # promtool check rules + promtool test rules
eval "$(scripts/prometheus.sh env)"
command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
# docker-compose validates docker-compose.yml offline (sluice/tests/compose.rs); no engine needed.
command -v docker-compose >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }
scripts/browser.sh install
eval "$(scripts/browser.sh env)"
cargo test --workspace --locked "$@"

# The built-in dashboard in headless Chromium, against the debug binary cargo test just built.
cargo build -p sluice --locked
export SLUICE_BIN="$CARGO_TARGET_DIR/debug/sluice"
node --test sluice/tests/browser/dashboard.test.js

# The JavaScript SDK (sdk-clients/js): node --test against the same binary, and headless Chromium
# for the browser build, RudderStack's browser SDK and the beacon.
(cd sdk-clients/js && npm ci --no-audit --no-fund && npm run build && npm test)
