#!/usr/bin/env bash
# The chat-platform capture benchmark (docs/chat-core.md, BENCHMARKS.md "chat capture"):
#   1. Sluice (default pipeline: scrub_pii to files) + chat-core (analytics on) + chat-load with
#      USERS users for DURATION seconds; Sluice is killed with SIGKILL at KILL_AT seconds into the
#      run phase and restarted; CPU and RSS of both servers are sampled every 5 s;
#      then `sluice reconcile` (exit status and output are part of the result);
#   2. the same load against a fresh chat-core with analytics off, for the p99 post latency
#      without the SDK.
# Release binaries: cargo build --release -p sluice -p chat-core
#
# Usage: USERS=30000 DURATION=600 benches/chat_capture.sh      (the full run)
#        USERS=3000 DURATION=90 benches/chat_capture.sh        (a short one)
# Other knobs: COMPRESSION (default 1), ONLINE (0.3), WAR_ROOM (posts/s, default 0), OUT (work dir),
#   OFF_DURATION (seconds of the analytics-off run, default DURATION: latency needs less time).
set -euo pipefail
cd "$(dirname "$0")/.."
USERS=${USERS:-3000}
DURATION=${DURATION:-600}
KILL_AT=${KILL_AT:-$((DURATION / 2))}
COMPRESSION=${COMPRESSION:-1}
ONLINE=${ONLINE:-0.3}
WAR_ROOM=${WAR_ROOM:-0}
OFF_DURATION=${OFF_DURATION:-$DURATION}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}
PROFILE=${PROFILE:-release}   # debug only to try the script: figures from debug builds mean little
BIN=$TARGET/$PROFILE
SLUICE=${SLUICE_BIN:-$BIN/sluice}
OUT=${OUT:-$(mktemp -d /tmp/chat-capture.XXXXXX)}
mkdir -p "$OUT"
for b in "$SLUICE" "$BIN/chat-core" "$BIN/chat-load"; do
  [ -x "$b" ] || { echo "missing $b: cargo build --release -p sluice -p chat-core" >&2; exit 2; }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SLUICE_PORT=$(free_port); CHAT_PORT=$(free_port)
export SLUICE_DATA_DIR=$OUT/sluice-data SLUICE_LISTEN=127.0.0.1:$SLUICE_PORT
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_sluice() { "$SLUICE" run --config config/sluice.yaml >>"$OUT/sluice.log" 2>&1 & SLUICE_PID=$!; echo "$SLUICE_PID" >"$OUT/sluice.pid"; PIDS+=("$SLUICE_PID"); wait_url "http://$SLUICE_LISTEN/health"; }
start_chat() { # $1 = on|off, $2 = data dir
  "$BIN/chat-core" --listen "127.0.0.1:$CHAT_PORT" --data-dir "$2" --sluice-url "http://$SLUICE_LISTEN" --analytics "$1" >>"$OUT/chat-$1.log" 2>&1 &
  CHAT_PID=$!; echo "$CHAT_PID" >"$OUT/chat.pid"; PIDS+=("$CHAT_PID"); wait_url "http://127.0.0.1:$CHAT_PORT/api/v4/system/ping"; }
wait_url() { for _ in $(seq 600); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }
# pid -> "cpu_seconds rss_mib"
usage() { [ -r "/proc/$1/stat" ] || { echo "- -"; return; }
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f ", ($14+$15)/hz}' "/proc/$1/stat"
  awk '/VmRSS/ {printf "%.0f\n", $2/1024}' "/proc/$1/status"; }
sample() { # every 5 s while chat-load runs: t, sluice cpu/rss, chat cpu/rss
  local t0=$SECONDS
  while kill -0 "$LOAD_PID" 2>/dev/null; do
    echo "$((SECONDS - t0)) $(usage "$(cat "$OUT/sluice.pid")") $(usage "$(cat "$OUT/chat.pid")")" >>"$OUT/usage-$1.txt"; sleep 5
  done; }

run_load() { # $1 = on|off, $2 = seconds
  "$BIN/chat-load" --url "http://127.0.0.1:$CHAT_PORT" --users "$USERS" --online "$ONLINE" --compression "$COMPRESSION" \
    --duration "$2" --war-room-rate "$WAR_ROOM" --summary-json "$OUT/summary-$1.json" --progress-every 10 \
    >"$OUT/load-$1.txt" 2>"$OUT/load-$1.log" & LOAD_PID=$!; PIDS+=("$LOAD_PID"); }

echo "work dir: $OUT; $PROFILE build; $USERS users, $DURATION s, SIGKILL of Sluice at ${KILL_AT}s of the run phase; $(nproc) cores" >&2
start_sluice
start_chat on "$OUT/chat-on"
run_load on "$DURATION"
until grep -q "setup took" "$OUT/load-on.log" 2>/dev/null; do kill -0 "$LOAD_PID" || { cat "$OUT/load-on.log"; exit 1; }; sleep 1; done
RUN_START=$SECONDS
sample on & SAMPLER=$!
sleep "$KILL_AT"
kill -9 "$SLUICE_PID"; echo "SIGKILL to Sluice at $((SECONDS - RUN_START)) s" >&2
start_sluice
wait "$LOAD_PID" || true
wait "$SAMPLER" || true
RECONCILE_RC=0
"$SLUICE" reconcile --config config/sluice.yaml --ledger "$OUT/chat-on/emitted.ledger" --wait 300 >"$OUT/reconcile.txt" || RECONCILE_RC=$?
kill "$CHAT_PID" 2>/dev/null || true

start_chat off "$OUT/chat-off"
run_load off "$OFF_DURATION"
wait "$LOAD_PID" || true

echo "== chat-load, analytics on"; grep -v '^\[' "$OUT/load-on.log" | head -5; cat "$OUT/load-on.txt"
echo "== chat-load, analytics off"; cat "$OUT/load-off.txt"
echo "== reconcile (exit $RECONCILE_RC)"; cat "$OUT/reconcile.txt"
echo "== CPU seconds and RSS MiB every 5 s: t sluice_cpu sluice_rss chat_cpu chat_rss (Sluice restarted at ${KILL_AT}s)"
cat "$OUT/usage-on.txt"
echo "== load average: $(cat /proc/loadavg)"
