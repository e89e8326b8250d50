#!/usr/bin/env bash
# Installs (idempotently) what the browser tests need: Debian's chromium and the npm package
# playwright-core (which drives it; `npx playwright install` cannot download browsers here).
# Usage: scripts/browser.sh install | env
# `env` prints the variables the tests read:
#   SLUICE_TEST_CHROMIUM    path of the chromium binary
#   SLUICE_TEST_PLAYWRIGHT  directory of the playwright-core package: require() it by this path
set -euo pipefail

SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
NODE_DIR=$SLUICE_CACHE/browser
PLAYWRIGHT_VERSION=1.65.1

install() {
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
      echo "browser: chromium is missing; install Debian's chromium package" >&2
      return 1
    fi
  fi
  if [ "$(cat "$NODE_DIR/.sluice-stamp" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
    mkdir -p "$NODE_DIR"
    (cd "$NODE_DIR" && [ -f package.json ] || echo '{"private":true}' > "$NODE_DIR/package.json")
    npm install --prefix "$NODE_DIR" --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_VERSION"
    echo "$PLAYWRIGHT_VERSION" > "$NODE_DIR/.sluice-stamp"
  fi
}

print_env() {
  cat <<ENV
export SLUICE_TEST_CHROMIUM=$(command -v chromium || echo /usr/bin/chromium)
export SLUICE_TEST_PLAYWRIGHT=$NODE_DIR/node_modules/playwright-core
ENV
}

case "${1:-install}" in
  install) install ;;
  env) print_env ;;
  *) echo "usage: $0 install|env" >&2; exit 2 ;;
esac
