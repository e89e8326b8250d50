#!/usr/bin/env bash
# Ingest benchmark (issue 2): the parse-only baseline server and Sluice's collector, measured in
# the same run with the same load tool (wrk), bodies and connection counts.
#
#   bash benches/ingest.sh                      # 3 rounds, 10 s per measurement
#   ROUNDS=5 DURATION=15 bash benches/ingest.sh
#   SLUICE=/path/to/other/sluice bash benches/ingest.sh   # measure another build
#   COMPARE=/path/to/before/sluice bash benches/ingest.sh  # adds that build's rows to each round
#
# The machine's speed drifts by tens of percent from minute to minute (shared host), so the
# servers are measured in rounds (baseline, sluice ingest, sluice + router, again and again) and
# each Sluice row is compared with the baseline of its own round. Prints every round's rows, then
# a summary: the median of each figure over the rounds, and the median of the per-round ratios.
# Figures: requests/s, events/s, p50/p99 latency, peak RSS, server CPU. Rows:
#   baseline          benches/src/bin/baseline_server.rs: read body, parse into serde_json::Value, 200
#   sluice ingest     collector + durable log (group commit, fdatasync), no destination
#   sluice + router   the same plus the shipped scrub_pii transformation and a files destination,
#                     so the router competes with the collector for the same two cores
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
SINGLE_CONNS="${SINGLE_CONNS:-256}"
BATCH_CONNS="${BATCH_CONNS:-64}"
THREADS="${THREADS:-2}"
WORK="$(mktemp -d /tmp/sluice-ingest-bench.XXXXXX)"
PORT_BASE=18090
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
[ "${BUILD:-yes}" = yes ] && cargo build --release --locked -q -p sluice -p sluice-benches
BIN="$CARGO_TARGET_DIR/release"
SLUICE="${SLUICE:-$BIN/sluice}"   # or another build of sluice (BUILD=no skips the build), for before/after pairs
"$BIN/bench-payloads" "$WORK" >&2

wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run_wrk NAME PID URL BODY CONNS EVENTS_PER_REQUEST -> one table row on stdout
run_wrk() {
  local name=$1 pid=$2 url=$3 body=$4 conns=$5 per=$6
  BODY="$body" WRITE_KEY=bench-key wrk -t"$THREADS" -c"$conns" -d2s -s benches/wrk/post.lua "$url" >/dev/null  # warm-up
  local peak=0 t0; t0=$(cpu_ticks "$pid")
  ( while kill -0 "$pid" 2>/dev/null; do rss_kb "$pid"; sleep 0.25; done ) > "$WORK/rss" &
  local sampler=$!
  local out; out=$(BODY="$body" WRITE_KEY=bench-key wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --timeout 10s -s benches/wrk/post.lua "$url")
  kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
  local t1; t1=$(cpu_ticks "$pid")
  peak=$(sort -n "$WORK/rss" | tail -1)
  local line; line=$(grep '^RESULT' <<<"$out")
  eval "${line#RESULT }"   # requests= duration_us= non2xx= ... p99_us=
  python3 - "$name" "$conns" "$per" "$requests" "$duration_us" "$non2xx" "$((connect+read+write+timeout))" "$p50_us" "$p99_us" "$peak" "$((t1-t0))" "$(getconf CLK_TCK)" <<'PY'
import sys
name, conns, per, req, dur, non2xx, sockerr, p50, p99, rss, ticks, hz = sys.argv[1:]
secs = int(dur) / 1e6
rps = int(req) / secs
print(f"{name}|{conns}|{rps:.0f}|{rps*int(per):.0f}|{int(p50)/1000:.2f}|{int(p99)/1000:.2f}|{int(rss)/1024:.0f}|{int(ticks)/int(hz)/secs*100:.0f}|{non2xx}|{sockerr}")
PY
}

measure() {  # measure LABEL PID BASE_URL -> rows for single and batch
  local label=$1 pid=$2 base=$3
  run_wrk "$label single" "$pid" "$base/v1/track" "$WORK/single.json" "$SINGLE_CONNS" 1
  run_wrk "$label batch100" "$pid" "$base/v1/batch" "$WORK/batch.json" "$BATCH_CONNS" 100
}

sluice_config() {  # sluice_config DIR PORT WITH_ROUTER
  local transformations="" destinations="destinations: []"
  if [ "$3" = yes ]; then
    transformations="transformations: [{ id: scrub_pii, script: $PWD/transforms/scrub_pii.rhai }]"
    destinations="destinations:
  - id: local_files
    transformations: [scrub_pii]
    batch: { max_events: 1000, max_age_ms: 1000 }
    sink: { type: files, path: $1/out }"
  fi
  cat > "$1/sluice.yaml" <<YAML
data_dir: $1
collector: { listen: "127.0.0.1:$2" }
admin: { listen: "127.0.0.1:$(($2 + 100))" }
log: { disk_budget_bytes: 32212254720 }
sources: [{ id: bench, write_keys: [bench-key] }]
$transformations
$destinations
YAML
}

ROWS=()
for round in $(seq "$ROUNDS"); do
  "$BIN/baseline-server" "127.0.0.1:$PORT_BASE" 2 & PIDS+=($!); base_pid=$!
  wait_port $PORT_BASE
  mapfile -t -O "${#ROWS[@]}" ROWS < <(measure "$round baseline" "$base_pid" "http://127.0.0.1:$PORT_BASE")
  kill "$base_pid"; wait "$base_pid" 2>/dev/null || true

  for variant in ingest router ${COMPARE:+before-ingest before-router}; do
    dir="$WORK/$variant"; mkdir -p "$dir"; port=$((PORT_BASE + 1))
    sluice_config "$dir" "$port" "$(case $variant in *router) echo yes;; *) echo no;; esac)"
    bin="$SLUICE"; name="sluice-$variant"
    case $variant in before-*) bin="$COMPARE"; name="$variant";; esac
    RUST_LOG=warn "$bin" run --config "$dir/sluice.yaml" 2>"$dir/stderr" & PIDS+=($!); pid=$!
    wait_port "$port"
    mapfile -t -O "${#ROWS[@]}" ROWS < <(measure "$round $name" "$pid" "http://127.0.0.1:$port")
    if [ "$variant" != "${variant%router}" ]; then  # how far the router was behind when the load stopped
      curl -s "http://127.0.0.1:$((port + 100))/metrics" | grep -E '^sluice_destination_lag_events' >&2 || true
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
done

echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); wrk -t$THREADS, $ROUNDS rounds of ${DURATION}s per row after a 2 s warm-up; $(date -u +%Y-%m-%d)"
python3 - "${ROWS[@]}" <<'PY'
import statistics, sys
rows = [r.split("|") for r in sys.argv[1:]]  # "round server shape", conns, req/s, ev/s, p50, p99, rss, cpu, non2xx, sockerr
head = "| {} | conns | req/s | events/s | p50 ms | p99 ms | peak RSS MB | server CPU % | non-2xx | socket errors | vs baseline events/s |"
rule = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
base = {(r[0].split()[0], r[0].split()[2]): float(r[3]) for r in rows if r[0].split()[1] == "baseline"}
def ratio(r):
    rnd, _, shape = r[0].split()
    return float(r[3]) / base[(rnd, shape)] if base.get((rnd, shape)) else 0.0
print("\nEvery round:\n")
print(head.format("round server shape")); print(rule)
for r in rows:
    print("| " + " | ".join(r + [f"{ratio(r):.2f}x"]) + " |")
print("\nSummary (median over the rounds; errors summed; RSS the highest):\n")
print(head.format("server shape")); print(rule)
names = []
for r in rows:
    n = " ".join(r[0].split()[1:])
    if n not in names:
        names.append(n)
for n in names:
    group = [r for r in rows if " ".join(r[0].split()[1:]) == n]
    med = lambda i, fmt: fmt.format(statistics.median(float(g[i]) for g in group))
    print("| " + " | ".join([n, group[0][1], med(2, "{:.0f}"), med(3, "{:.0f}"), med(4, "{:.2f}"), med(5, "{:.2f}"),
        str(max(int(g[6]) for g in group)), med(7, "{:.0f}"), str(sum(int(g[8]) for g in group)), str(sum(int(g[9]) for g in group)),
        "{:.2f}x".format(statistics.median(ratio(g) for g in group))]) + " |")
PY
