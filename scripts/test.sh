#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts the real backends the tests talk
# to (moto for S3, fakesnow for Snowflake, the Python SDK clients), runs every test, stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
# Keep build artifacts outside the checkout so a fresh clone reuses an earlier build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}
scripts/backends.sh start
trap 'scripts/backends.sh stop' EXIT
eval "$(scripts/backends.sh env)"
cargo test --workspace --locked "$@"

# The JavaScript SDK (sdk-clients/js): node --test against the debug `sluice` binary built above,
# and headless Chromium for the browser build, RudderStack's browser SDK and the beacon.
command -v npm >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
cargo build -p sluice --locked
scripts/browser.sh install
eval "$(scripts/browser.sh env)"
(cd sdk-clients/js && npm ci --no-audit --no-fund && npm run build && npm test)
