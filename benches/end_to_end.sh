#!/usr/bin/env bash
# End-to-end benchmark (issue 4): HTTP ingest -> durable log -> transforms/scrub_pii.rhai ->
# S3 Parquet on moto, at a fixed offered rate for a fixed time, with the destination's lag, the
# delivered rate and Sluice's RSS printed every second. Afterwards every Parquet object is read
# back and its rows counted against the events the collector acknowledged.
#
#   bash benches/end_to_end.sh                  # 200,000 events/s offered for 60 s
#   RATES="200000 100000 50000" SECONDS_PER_RATE=60 bash benches/end_to_end.sh
#   CHAIN=none bash benches/end_to_end.sh       # no transformation: the pipeline's own ceiling
#   SLUICE=/path/to/other/sluice bash benches/end_to_end.sh   # measure another build
#   BASELINE=no bash benches/end_to_end.sh      # skip the parse-only baseline measured first
#
# Issue 16 asks for the end-to-end rate as a share of the parse-only baseline's batch rate in the
# same run: so the run starts with that baseline (benches/src/bin/baseline_server.rs, read and
# parse each body, answer 200; wrk, 100-event batches, CONCURRENCY connections, BASELINE_SECONDS).
#
# Needs the test backends (bash scripts/backends.sh start, which this script runs).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
RATES="${RATES:-200000}"
SECONDS_PER_RATE="${SECONDS_PER_RATE:-60}"
CONCURRENCY="${CONCURRENCY:-64}"
LANES="${LANES:-2}"
MAX_EVENTS="${MAX_EVENTS:-10000}"
export CHAIN="${CHAIN:-scrub_pii}"   # the destination's transformations: scrub_pii or none
PORT=18190
ADMIN_PORT=18191  # the admin listener: /metrics
WORK="$(mktemp -d /tmp/sluice-e2e-bench.XXXXXX)"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

bash scripts/backends.sh start >/dev/null
PY="$HOME/.cache/sluice/venv/bin/python"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
[ "${BUILD:-yes}" = yes ] && cargo build --release --locked -q -p sluice -p sluice-benches
BIN="$CARGO_TARGET_DIR/release"
SLUICE="${SLUICE:-$BIN/sluice}"   # or another build of sluice, to compare two builds
"$BIN/bench-payloads" "$WORK" >&2

ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# cpu_split SLUICE_PID MOTO_PID: CPU use of each over the load window (after 1 s, for N-2 s).
cpu_split() {
  sleep 1
  local load; load=$(pgrep -n bench-load || true)
  local s0 m0 l0 s1 m1 l1 hz window=$((SECONDS_PER_RATE - 2))
  s0=$(ticks "$1"); m0=$(ticks "$2"); l0=$(ticks "$load")
  sleep "$window"
  s1=$(ticks "$1"); m1=$(ticks "$2"); l1=$(ticks "$load")
  hz=$(getconf CLK_TCK)
  echo "CPU while loaded (100% = one core): sluice $(( (s1 - s0) * 100 / hz / window ))%, bench-load $(( (l1 - l0) * 100 / hz / window ))%, moto $(( (m1 - m0) * 100 / hz / window ))%"
}

if [ "${BASELINE:-yes}" = yes ]; then
  # Checked before the baseline server starts, which would otherwise outlive the failed run.
  command -v wrk >/dev/null || { echo "the parse-only baseline needs wrk: apt-get install -y wrk (or BASELINE=no)" >&2; exit 1; }
  "$BIN/baseline-server" "127.0.0.1:$PORT" 2 & base_pid=$!
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
  out=$(BODY="$WORK/batch.json" WRITE_KEY=bench-key wrk -t2 -c"$CONCURRENCY" -d"${BASELINE_SECONDS:-10}s" --timeout 10s \
    -s benches/wrk/post.lua "http://127.0.0.1:$PORT/v1/batch")
  kill "$base_pid"; wait "$base_pid" 2>/dev/null || true
  line=$(grep '^RESULT' <<<"$out"); eval "${line#RESULT }"   # requests= duration_us= ...
  echo "## parse-only baseline: $(( requests * 100 * 1000000 / duration_us )) events/s (100-event batches, $CONCURRENCY connections, ${BASELINE_SECONDS:-10}s)"
fi

status=0
for rate in $RATES; do
  bucket="sluice-bench-$rate-$(date +%s)"
  "$PY" -c "import boto3,sys; boto3.client('s3', endpoint_url='http://127.0.0.1:5000').create_bucket(Bucket=sys.argv[1])" "$bucket"
  dir="$WORK/run-$rate"; mkdir -p "$dir"
  cat > "$dir/sluice.yaml" <<YAML
data_dir: $dir
collector: { listen: "127.0.0.1:$PORT" }
admin: { listen: "127.0.0.1:$ADMIN_PORT" }
log: { disk_budget_bytes: 32212254720 }
sources: [{ id: bench, write_keys: [bench-key] }]
transformations: [{ id: scrub_pii, script: $PWD/transforms/scrub_pii.rhai }]
destinations:
  - id: lake
    transformations: [$([ "$CHAIN" = none ] || echo scrub_pii)]
    lanes: $LANES
    batch: { max_events: $MAX_EVENTS, max_bytes: 67108864, max_age_ms: 2000 }
    sink:
      type: s3
      bucket: $bucket
      prefix: bench
      region: us-east-1
      endpoint: http://127.0.0.1:5000
      force_path_style: true
      format: parquet
YAML
  RUST_LOG=warn "$SLUICE" run --config "$dir/sluice.yaml" 2>"$dir/stderr" & PID=$!
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
  echo "## offered $rate events/s for ${SECONDS_PER_RATE}s (batches of 100, $CONCURRENCY connections, $LANES lanes, up to $MAX_EVENTS events per object, transformations: $CHAIN)"
  # Who used the two cores while the load ran: Sluice, the load generator, the S3 server.
  cpu_split "$PID" "$(cat "$HOME/.cache/sluice/run/moto.pid" 2>/dev/null)" > "$dir/cpu" & sampler=$!
  "$BIN/bench-load" "http://127.0.0.1:$PORT/v1/batch" "$WORK/batch.json" 100 "$rate" "$SECONDS_PER_RATE" \
    --concurrency "$CONCURRENCY" --metrics "http://127.0.0.1:$ADMIN_PORT/metrics" --pid "$PID" | tee "$dir/load.out"
  wait "$sampler"
  cat "$dir/cpu"
  echo "peak RSS (VmHWM): $(awk '/VmHWM/ {printf "%.0f MB", $2/1024}' /proc/$PID/status)"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  acked=$(sed -n 's/.*acked_events=\([0-9]*\).*/\1/p' "$dir/load.out")
  "$PY" - "$bucket" "$acked" <<'PY' || status=1
import io, os, sys, boto3, pyarrow.parquet as pq
bucket, acked = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3", endpoint_url="http://127.0.0.1:5000")
rows = objects = 0
scrubbed = None
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for o in page.get("Contents", []):
        t = pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))
        rows += t.num_rows; objects += 1
        if scrubbed is None:
            first = {c: t.column(c)[0].as_py() for c in ("context", "properties")}
            scrubbed = ("[redacted]" in first["context"] and "[email]" in first["properties"]
                        and not any("@bank.example.com" in v for v in first.values()))
want_scrubbed = os.environ.get("CHAIN") != "none"  # without a transformation nothing is scrubbed
print(f"read back: {objects} Parquet objects, {rows} rows; acknowledged {acked}; missing {max(acked - rows, 0)}; PII scrubbed in a sampled row: {scrubbed} (expected {want_scrubbed})", flush=True)
os._exit(0 if rows >= acked and scrubbed == want_scrubbed else 1)  # skips pyarrow's noisy teardown
PY
  # Dead letters are not losses, but a benchmark should show them.
  "$SLUICE" dlq list --config "$dir/sluice.yaml" 2>&1 | head -5
  rm -rf "$dir"
done
exit $status
