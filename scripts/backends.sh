#!/usr/bin/env bash
# Installs (idempotently) and starts the real backends the test suite talks to, all on 127.0.0.1:
#   moto     S3-compatible server          http://127.0.0.1:5000
#   fakesnow Snowflake-protocol server     http://127.0.0.1:8765
#   tansu    Kafka-protocol broker         127.0.0.1:9092 (sqlite engine, a fresh database per start;
#            built from crates.io once, about 15 minutes cold, and cached under $SLUICE_CACHE/tansu)
# plus the Python client libraries used by the compatibility tests (rudder-sdk-python, ...).
# Usage: scripts/backends.sh start | stop | env
# `env` prints the variables the tests read; `start` writes them to $SLUICE_CACHE/test.env too.
set -euo pipefail

SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
VENV=$SLUICE_CACHE/venv
RUN=$SLUICE_CACHE/run
mkdir -p "$SLUICE_CACHE" "$RUN"

PY_PACKAGES=("moto[server]==5.1.*" "fakesnow[server]==0.12.1" "snowflake-connector-python<5" "rudder-sdk-python" "segment-analytics-python")

TANSU=$SLUICE_CACHE/tansu/bin/tansu

# What building librdkafka (the rdkafka crate, vendored) needs besides gcc, make and perl.
build_deps() {
  local missing=()
  for pkg in zlib1g-dev libssl-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# tansu with the sqlite engine the tests use (libsql; dynostore kept for trying the memory engine);
# built only when missing.
# The version is pinned: the tests work around known limits of tansu 0.6 (see
# sluice/tests/kafka_roles.rs and the sqlite note below), so another version is a deliberate change.
TANSU_VERSION=0.6.0
install_tansu() {
  if [ ! -x "$TANSU" ] || [ "$("$TANSU" --version 2>/dev/null)" != "tansu $TANSU_VERSION" ]; then
    echo "backends: building tansu $TANSU_VERSION (once, about 15 minutes) into $SLUICE_CACHE/tansu" >&2
    # Its own temporary target dir: the workspace's (CARGO_TARGET_DIR) is no place for tansu's crates.
    env -u CARGO_TARGET_DIR cargo install tansu --version "$TANSU_VERSION" --locked --force --features dynostore,libsql --root "$SLUICE_CACHE/tansu" >"$RUN/tansu-build.log" 2>&1 \
      || { echo "backends: building tansu failed; see $RUN/tansu-build.log" >&2; return 1; }
  fi
}

install() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  # The stamp records what was installed so a second run costs nothing.
  local want="${PY_PACKAGES[*]}"
  if [ "$(cat "$VENV/.sluice-stamp" 2>/dev/null)" != "$want" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
    echo "$want" > "$VENV/.sluice-stamp"
  fi
}

wait_port() { # host port name
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "backends: $3 did not start on $1:$2; see $RUN/$3.log" >&2
  return 1
}

start_one() { # name port command...
  local name=$1 port=$2; shift 2
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
  nohup "$@" > "$RUN/$name.log" 2>&1 &
  echo $! > "$RUN/$name.pid"
  wait_port 127.0.0.1 "$port" "$name"
}

# The sqlite engine, not memory://: tansu 0.6's memory engine (dynostore) answers a fetch only with
# the record batches that start at or after the fetch offset, so a consumer resuming from a commit
# that falls inside a batch never gets the rest of that batch (and ListOffsets reports the last
# batch's base offset + 1 as the high watermark). The sqlite engine stores records one by one and
# serves any offset, as Kafka does. tansu resolves a sqlite:// path against its working directory,
# hence the `env -C`; the database is removed only when no broker is running on it.
start_tansu() {
  if (exec 3<>"/dev/tcp/127.0.0.1/9092") 2>/dev/null; then return 0; fi
  rm -f "$RUN"/tansu.db "$RUN"/tansu.db-shm "$RUN"/tansu.db-wal
  start_one tansu 9092 env -C "$RUN" "$TANSU" broker --listener-url tcp://127.0.0.1:9092 \
    --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine sqlite://tansu.db
}

print_env() {
  cat <<ENV
export SLUICE_TEST_PYTHON=$VENV/bin/python
export SLUICE_TEST_S3_ENDPOINT=http://127.0.0.1:5000
export SLUICE_TEST_SNOWFLAKE_URL=http://127.0.0.1:8765
export SLUICE_TEST_KAFKA_BROKERS=127.0.0.1:9092
export SLUICE_TEST_TANSU=$TANSU
ENV
}

case "${1:-start}" in
  start)
    install
    start_one moto 5000 "$VENV/bin/moto_server" -H 127.0.0.1 -p 5000
    mkdir -p "$RUN/fakesnow"
    start_one fakesnow 8765 "$VENV/bin/fakesnow" -s --host 127.0.0.1 -p 8765
    build_deps
    install_tansu
    start_tansu
    print_env > "$SLUICE_CACHE/test.env"
    ;;
  stop)
    for name in moto fakesnow tansu; do
      if [ -f "$RUN/$name.pid" ]; then kill "$(cat "$RUN/$name.pid")" 2>/dev/null || true; rm -f "$RUN/$name.pid"; fi
    done
    ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
