#!/usr/bin/env bash
# Installs (idempotently) Debian's prometheus package, which ships `prometheus` and `promtool`,
# and checks the shipped rules: `promtool check rules` and `promtool test rules` (one unit test
# per alert). The Rust test that scrapes a real `sluice run` finds the binary through `env`.
# Usage: scripts/prometheus.sh install | check | env
set -euo pipefail
cd "$(dirname "$0")/.."

install() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    # The package's postinst wants to start a service; there is no init here, and none is wanted.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "prometheus: missing; install Debian's prometheus package (it ships promtool)" >&2
    return 1
  fi
}

check() {
  promtool check rules config/prometheus/*.rules.yml
  promtool test rules config/prometheus/tests/*.test.yml
}

case "${1:-install}" in
  install) install ;;
  check) install && check ;;
  env)
    echo "export SLUICE_TEST_PROMETHEUS=$(command -v prometheus || echo /usr/bin/prometheus)"
    ;;
  *) echo "usage: $0 install|check|env" >&2; exit 2 ;;
esac
