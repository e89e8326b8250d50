#!/usr/bin/env bash
# Kafka benchmark (issue 14), on tansu (a Kafka-protocol broker, sqlite engine) started by this
# script on its own port:
#   1. durable ingest, same run, same load: the embedded log (`--role all`, no destination) vs a
#      Kafka collector (`--role collector`: acks=all, idempotent producer), 100-event batches and
#      single events, in rounds; each Kafka row is compared with the embedded row of its round;
#   2. router throughput from Kafka: a backlog of events in a 6-partition topic drained into a
#      files destination (no transformation) by 1, then by 2 router processes (a fresh consumer
#      group each time, so both read the same backlog).
#
#   bash benches/kafka.sh                       # 3 rounds of 10 s, a backlog of 300,000 events
#   ROUNDS=5 DURATION=15 BACKLOG=500000 bash benches/kafka.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
SLUICE_CACHE=${SLUICE_CACHE:-$HOME/.cache/sluice}
TANSU="${SLUICE_TEST_TANSU:-$SLUICE_CACHE/tansu/bin/tansu}"
DURATION="${DURATION:-10}"
ROUNDS="${ROUNDS:-3}"
BACKLOG="${BACKLOG:-300000}"
THREADS="${THREADS:-2}"
KAFKA_PORT="${KAFKA_PORT:-19092}"
PORT=18190
WORK="$(mktemp -d /tmp/sluice-kafka-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
[ -x "$TANSU" ] || { echo "tansu is needed: scripts/backends.sh start builds it into $SLUICE_CACHE/tansu" >&2; exit 1; }
cargo build --release --locked -q -p sluice -p sluice-benches
BIN="$CARGO_TARGET_DIR/release"
"$BIN/bench-payloads" "$WORK" >&2

wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "http://$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {printf "%.0f", s}'; }

# sqlite, not memory://: tansu 0.6's memory engine skips the rest of a record batch for a
# consumer resuming inside it (after the rebalance when the second router joins, records would be
# lost). tansu resolves sqlite:// against its working directory.
(cd "$WORK" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --storage-engine sqlite://tansu.db) >"$WORK/tansu.log" 2>&1 & PIDS+=($!); TANSU_PID=$!
wait_port "$KAFKA_PORT"

config() {  # config DIR BACKEND TOPIC [DESTINATION]
  local log="log: { disk_budget_bytes: 32212254720 }" dest="destinations: []"
  if [ "$2" = kafka ]; then
    log="log: { backend: kafka, kafka: { brokers: 127.0.0.1:$KAFKA_PORT, topic: $3, partitions: 6 } }"
  fi
  if [ -n "${4:-}" ]; then
    dest="destinations: [{ id: $4, batch: { max_events: 5000, max_age_ms: 500 }, sink: { type: files, path: $1/out } }]"
  fi
  cat > "$1/sluice.yaml" <<YAML
data_dir: \${T_DATA:-$1}
collector: { listen: "127.0.0.1:$PORT" }
admin: { listen: "\${T_ADMIN:-127.0.0.1:$((PORT + 100))}" }
$log
sources: [{ id: bench, write_keys: [bench-key] }]
$dest
YAML
}

# run_wrk NAME PID BODY CONNS PER_REQUEST URL -> "name|events/s|p50|p99|cpu%|non2xx"
run_wrk() {
  local name=$1 pid=$2 body=$3 conns=$4 per=$5 url=$6
  BODY="$body" WRITE_KEY=bench-key wrk -t"$THREADS" -c"$conns" -d2s -s benches/wrk/post.lua "$url" >/dev/null
  local t0; t0=$(cpu_ticks "$pid")
  local out; out=$(BODY="$body" WRITE_KEY=bench-key wrk -t"$THREADS" -c"$conns" -d"${DURATION}s" --timeout 15s -s benches/wrk/post.lua "$url")
  local t1; t1=$(cpu_ticks "$pid")
  local line; line=$(grep '^RESULT' <<<"$out"); eval "${line#RESULT }"
  python3 -c "import sys; n,req,dur,per,p50,p99,t,hz,bad=sys.argv[1:]; s=int(dur)/1e6; print(f'{n}|{int(req)/s*int(per):.0f}|{int(p50)/1000:.2f}|{int(p99)/1000:.2f}|{int(t)/int(hz)/s*100:.0f}|{bad}')" \
    "$name" "$requests" "$duration_us" "$per" "$p50_us" "$p99_us" "$((t1-t0))" "$(getconf CLK_TCK)" "$non2xx"
}

echo "## ingest: embedded vs Kafka (tansu)" >&2
ROWS=()
for round in $(seq "$ROUNDS"); do
  for backend in embedded kafka; do
    dir="$WORK/$backend-$round"; mkdir -p "$dir"
    config "$dir" "$backend" "ingest-$round-$RANDOM"
    role=all; [ "$backend" = kafka ] && role=collector
    SLUICE_LOG=warn "$BIN/sluice" run --config "$dir/sluice.yaml" --role "$role" 2>"$dir/stderr" & PIDS+=($!); pid=$!
    wait_port "$PORT"
    ROWS+=("$(run_wrk "$round $backend batch100" "$pid" "$WORK/batch.json" 64 100 "http://127.0.0.1:$PORT/v1/batch")")
    ROWS+=("$(run_wrk "$round $backend single" "$pid" "$WORK/single.json" 256 1 "http://127.0.0.1:$PORT/v1/track")")
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
echo "| round backend shape | events/s | p50 ms | p99 ms | server CPU % | non-2xx | Kafka / embedded |"
echo "|---|---:|---:|---:|---:|---:|---:|"
python3 - "${ROWS[@]}" <<'PY'
import sys
rows = [r.split("|") for r in sys.argv[1:]]
emb = {(r[0].split()[0], r[0].split()[2]): float(r[1]) for r in rows if r[0].split()[1] == "embedded"}
for r in rows:
    rnd, backend, shape = r[0].split()
    ratio = f"{float(r[1]) / emb[(rnd, shape)]:.2f}x" if backend == "kafka" and emb.get((rnd, shape)) else ""
    print("| " + " | ".join(r + [ratio]) + " |")
PY

echo "## router throughput from Kafka" >&2
topic="backlog-$RANDOM"
dir="$WORK/fill"; mkdir -p "$dir"; config "$dir" kafka "$topic"
SLUICE_LOG=warn "$BIN/sluice" run --config "$dir/sluice.yaml" --role collector 2>"$dir/stderr" & PIDS+=($!); pid=$!
wait_port "$PORT"
admin="127.0.0.1:$((PORT + 100))"
while [ "$(metric "$admin" sluice_events_received_total)" -lt "$BACKLOG" ]; do
  BODY="$WORK/batch.json" WRITE_KEY=bench-key wrk -t"$THREADS" -c64 -d5s -s benches/wrk/post.lua "http://127.0.0.1:$PORT/v1/batch" >/dev/null
done
total=$(metric "$admin" sluice_events_received_total)
kill "$pid"; wait "$pid" 2>/dev/null || true
echo "| routers | events drained | seconds | events/s | router CPU % (sum) |"
echo "|---:|---:|---:|---:|---:|"
for routers in 1 2; do
  dir="$WORK/drain-$routers"; mkdir -p "$dir"; config "$dir" kafka "$topic" "drain$routers$RANDOM"
  rpids=(); admins=()
  start=$(date +%s.%N)
  for r in $(seq "$routers"); do
    a="127.0.0.1:$((PORT + 200 + r))"; admins+=("$a")
    T_DATA="$dir/data-$r" T_ADMIN="$a" SLUICE_LOG=warn "$BIN/sluice" run --config "$dir/sluice.yaml" --role router 2>"$dir/stderr-$r" & PIDS+=($!); rpids+=($!)
  done
  t0=0; for p in "${rpids[@]}"; do t0=$((t0 + $(cpu_ticks "$p"))); done
  while :; do
    sum=0; for a in "${admins[@]}"; do sum=$((sum + $(metric "$a" sluice_destination_delivered_total 2>/dev/null || echo 0))); done
    [ "$sum" -ge "$total" ] && break
    sleep 0.2
  done
  end=$(date +%s.%N)
  t1=0; for p in "${rpids[@]}"; do t1=$((t1 + $(cpu_ticks "$p"))); done
  python3 -c "import sys; r,n,a,b,t,hz=sys.argv[1:]; s=float(b)-float(a); print(f'| {r} | {n} | {s:.1f} | {int(n)/s:.0f} | {int(t)/int(hz)/s*100:.0f} |')" \
    "$routers" "$total" "$start" "$end" "$((t1 - t0))" "$(getconf CLK_TCK)"
  for p in "${rpids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
done
echo
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); tansu $("$TANSU" --version 2>/dev/null | head -1) sqlite engine; $(date -u +%Y-%m-%d)"
