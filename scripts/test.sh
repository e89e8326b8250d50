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
