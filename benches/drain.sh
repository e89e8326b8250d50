#!/usr/bin/env bash
# Drain benchmark (issue 16): how fast the router empties a backlog, and what it costs per event.
#
#   bash benches/drain.sh                        # 1,000,000 events -> scrub_pii -> S3 Parquet
#   DESTS=four bash benches/drain.sh             # the same chain to files, S3 Parquet, a webhook
#                                                # and S3 NDJSON at once
#   SLUICE=/path/to/other/sluice bash benches/drain.sh   # another build (before/after pairs)
#   RUNS=2 CHAIN=none EVENTS=500000 bash benches/drain.sh
#   GZIP_LEVEL=1 DESTS=four bash benches/drain.sh   # gzip_level of the files and S3 NDJSON sinks
#   S3_LATENCY_MS=50 bash benches/drain.sh       # every S3 request held 50 ms (benches/lag_proxy.py
#                                                # in front of moto), as a real region would be
#
# Each run: start Sluice with its destinations disabled (they still hold the log), fill the log
# with EVENTS events over HTTP (100-event batches of the chat event of bench-payloads), stop it,
# enable the destinations, start it again and time until every destination's lag is 0. Prints the
# drain rate, Sluice's CPU seconds and page faults per 1,000 events over the drain, the cores Sluice
# and moto kept busy (of this machine's 2), peak RSS, and checks what
# landed: rows of every Parquet object, lines of the files destination, the delivered counters.
# Needs the test backends (moto): `bash scripts/backends.sh start`, which this script runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
EVENTS="${EVENTS:-1000000}"
DESTS="${DESTS:-s3}"          # s3 | four
CHAIN="${CHAIN:-scrub_pii}"   # scrub_pii | none
RUNS="${RUNS:-1}"
LANES="${LANES:-2}"
MAX_EVENTS="${MAX_EVENTS:-10000}"
PORT=18290
ADMIN_PORT=18291
HOOK_PORT=18292
WORK="$(mktemp -d /tmp/sluice-drain-bench.XXXXXX)"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

bash scripts/backends.sh start >/dev/null
PY="$HOME/.cache/sluice/venv/bin/python"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
if [ -z "${SLUICE:-}" ] || [ "${BUILD:-yes}" = yes ]; then
  cargo build --release --locked -q -p sluice -p sluice-benches
fi
BIN="$CARGO_TARGET_DIR/release"
SLUICE="${SLUICE:-$BIN/sluice}"
"$BIN/bench-payloads" "$WORK" >&2

wait_port() { for _ in $(seq 400); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
faults() { awk '{print $10 + $12}' "/proc/$1/stat"; }   # minor + major page faults
metric_sum() { curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"[{ ]" || $1 == m {s += $2; n++} END {if (n) printf "%d", s; else print -1}'; }

# The S3 endpoint: moto, or moto behind a proxy that adds latency to every request.
S3_ENDPOINT=http://127.0.0.1:5000
if [ -n "${S3_LATENCY_MS:-}" ]; then
  python3 benches/lag_proxy.py 18293 5000 "$(awk -v ms="$S3_LATENCY_MS" 'BEGIN {print ms / 1000}')" & PIDS+=($!)
  wait_port 18293
  S3_ENDPOINT=http://127.0.0.1:18293
fi

# The webhook receiver: the parse-only baseline server answers 200 to any POST.
if [ "$DESTS" = four ]; then
  "$BIN/baseline-server" "127.0.0.1:$HOOK_PORT" 1 & PIDS+=($!)
  wait_port "$HOOK_PORT"
fi

config() {  # config DIR ENABLED BUCKET
  local chain="[scrub_pii]"; [ "$CHAIN" = none ] && chain="[]"
  local s3="sink: { type: s3, bucket: $3, prefix: parquet, region: us-east-1, endpoint: $S3_ENDPOINT, force_path_style: true, format: parquet }"
  cat > "$1/sluice.yaml" <<YAML
data_dir: $1
collector: { listen: "127.0.0.1:$PORT" }
admin: { listen: "127.0.0.1:$ADMIN_PORT" }
log: { disk_budget_bytes: 32212254720 }
sources: [{ id: bench, write_keys: [bench-key] }]
transformations: [{ id: scrub_pii, script: $PWD/transforms/scrub_pii.rhai }]
destinations:
  - id: lake
    enabled: $2
    transformations: $chain
    lanes: $LANES
    batch: { max_events: $MAX_EVENTS, max_bytes: 67108864, max_age_ms: 2000 }
    $s3
YAML
  if [ "$DESTS" = four ]; then
    cat >> "$1/sluice.yaml" <<YAML
  - id: local_files
    enabled: $2
    transformations: $chain
    batch: { max_events: $MAX_EVENTS, max_bytes: 67108864, max_age_ms: 2000 }
    sink: { type: files, path: $1/files${GZIP_LEVEL:+, gzip_level: $GZIP_LEVEL} }
  - id: hook
    enabled: $2
    transformations: $chain
    batch: { max_events: 1000, max_age_ms: 2000 }
    sink: { type: webhook, url: "http://127.0.0.1:$HOOK_PORT/events" }
  - id: archive
    enabled: $2
    transformations: $chain
    lanes: $LANES
    batch: { max_events: $MAX_EVENTS, max_bytes: 67108864, max_age_ms: 2000 }
    sink: { type: s3, bucket: $3, prefix: ndjson, region: us-east-1, endpoint: $S3_ENDPOINT, force_path_style: true, format: ndjson_gzip${GZIP_LEVEL:+, gzip_level: $GZIP_LEVEL} }
YAML
  fi
}

status=0
for run in $(seq "$RUNS"); do
  bucket="sluice-drain-$(date +%s)-$run"
  "$PY" -c "import boto3,sys; boto3.client('s3', endpoint_url='http://127.0.0.1:5000').create_bucket(Bucket=sys.argv[1])" "$bucket"
  dir="$WORK/run-$run"; mkdir -p "$dir"
  config "$dir" false "$bucket"
  SLUICE_LOG="${SLUICE_LOG:-warn}" "$SLUICE" run --config "$dir/sluice.yaml" 2>"$dir/fill.stderr" & pid=$!; PIDS+=($pid)
  wait_port "$PORT"; wait_port "$ADMIN_PORT"
  for fill in $(seq 50); do
    have=$(metric_sum sluice_log_next_offset)   # the records in the log (the admin listener's metric)
    [ "${have:-0}" -ge "$EVENTS" ] && break
    # Never fill without bound: a count that does not show up stops the benchmark.
    [ "$fill" = 50 ] && { echo "the log never reached $EVENTS events (sluice_log_next_offset: $have)" >&2; exit 1; }
    need=$((EVENTS - have)); secs=$(( (need + 199999) / 200000 ))
    "$BIN/bench-load" "http://127.0.0.1:$PORT/v1/batch" "$WORK/batch.json" 100 200000 "$secs" --concurrency 64 > "$dir/fill.out"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  config "$dir" true "$bucket"
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  moto=$(cat "$HOME/.cache/sluice/run/moto.pid" 2>/dev/null || echo)
  moto0=$( [ -n "$moto" ] && ticks "$moto" || echo 0)
  t0=$(date +%s.%N)
  SLUICE_LOG="${SLUICE_LOG:-warn}" "$SLUICE" run --config "$dir/sluice.yaml" 2>"$dir/drain.stderr" & pid=$!; PIDS+=($pid)
  wait_port "$ADMIN_PORT"
  while :; do
    lag=$(metric_sum sluice_destination_lag_events)
    [ "$lag" = 0 ] && break
    sleep 0.1
  done
  t1=$(date +%s.%N)
  cpu=$(ticks "$pid"); hz=$(getconf CLK_TCK); pf=$(faults "$pid")
  moto_cpu=$(( $( [ -n "$moto" ] && ticks "$moto" || echo 0) - moto0 ))
  rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$pid/status")
  delivered=$(metric_sum sluice_destination_delivered_total)
  dead=$(metric_sum sluice_destination_dead_lettered_total)
  shared=$(metric_sum sluice_transform_shared_total)   # outcomes a destination took from another's run
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$have" "$t0" "$t1" "$cpu" "$hz" "$rss" "$delivered" "$dead" "$load" "$DESTS" "$CHAIN" "${shared:-0}" "$pf" "$moto_cpu" <<'PY'
import sys
have, t0, t1, cpu, hz, rss, delivered, dead, load, dests, chain, shared, pf, moto = sys.argv[1:]
members = 4 if dests == "four" else 1
runs = (members * int(have) - int(shared)) / int(have)  # chain runs per event; 1.0 = each event once
secs = float(t1) - float(t0)
cpu_s = int(cpu) / int(hz)
print(f"RESULT dests={dests} chain={chain} events={have} seconds={secs:.2f} drain_events_per_s={int(have)/secs:.0f} "
      f"cpu_s={cpu_s:.1f} cpu_ms_per_1000_events={cpu_s*1e6/int(have):.1f} page_faults_per_1000_events={int(pf)*1000/int(have):.0f} "
      f"cores_used_sluice={cpu_s/secs:.2f} cores_used_moto={int(moto)/int(hz)/secs:.2f} "
      f"peak_rss_mb={rss} delivered={delivered} "
      f"dead_lettered={dead} chain_runs_per_event={runs:.2f} load_before='{load}'", flush=True)
PY
  "$PY" - "$bucket" "$have" "$dir/files" <<'PY' || status=1
import gzip, io, os, sys, boto3, pyarrow.parquet as pq
bucket, want, files = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5000")
counts = {"parquet": 0, "ndjson": 0}
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for o in page.get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
        if o["Key"].startswith("parquet"):
            counts["parquet"] += pq.read_table(io.BytesIO(body)).num_rows
        else:
            counts["ndjson"] += gzip.decompress(body).count(b"\n")
lines = 0
for root, _, names in os.walk(files):
    for n in names:
        with open(os.path.join(root, n), "rb") as f:
            data = f.read()
        lines += (gzip.decompress(data) if n.endswith(".gz") else data).count(b"\n")
print(f"landed: parquet rows {counts['parquet']}, ndjson lines {counts['ndjson']}, files lines {lines}; appended {want}", flush=True)
ok = counts["parquet"] >= want and (not os.path.isdir(files) or lines >= want) and (counts["ndjson"] == 0 or counts["ndjson"] >= want)
os._exit(0 if ok else 1)
PY
  rm -rf "$dir"
done
exit $status
