#!/usr/bin/env bash
# How fast `sluice reconcile` is for many ids: generates a ledger of N ids (intent + confirmation
# records, as chat-core writes them) and a files destination holding the same N events (100,000
# per gzip file; a handful of small events each), then times `sluice reconcile` and reports its
# peak RSS.
#
# Usage: benches/reconcile_speed.sh [N=10000000] [SLUICE binary, default the release build]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000000}
TARGET=${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}
BIN=${2:-$TARGET/release/sluice}
[ -x "$BIN" ] || { echo "no sluice binary at $BIN (cargo build --release -p sluice)" >&2; exit 2; }
DIR=$(mktemp -d /tmp/reconcile-speed.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
echo "generating $N ids in $DIR ..." >&2
python3 - "$DIR" "$N" <<'PY'
import gzip, os, sys, uuid
d, n = sys.argv[1], int(sys.argv[2])
out = os.path.join(d, "out", "2026", "12", "01", "00")
os.makedirs(out)
per_file = 100_000
with open(os.path.join(d, "emitted.ledger"), "w") as ledger:
    done = 0
    while done < n:
        k = min(per_file, n - done)
        ids = [str(uuid.UUID(bytes=os.urandom(16), version=4)) for _ in range(k)]
        ledger.write("".join(i + "\n" for i in ids))
        ledger.write("".join("+" + i + "\n" for i in ids))
        body = "".join('{"type":"track","event":"Post Created","userId":"u%d","messageId":"%s","properties":{"length":12}}\n' % (j % 977, i) for j, i in enumerate(ids))
        with gzip.open(os.path.join(out, "%020d-%020d.ndjson.gz" % (done, done + k - 1)), "wt", compresslevel=1) as f:
            f.write(body)
        done += k
PY
cat > "$DIR/sluice.yaml" <<YAML
data_dir: $DIR/data
collector:
  listen: 127.0.0.1:1
sources:
  - id: default
    write_keys: [k]
destinations:
  - id: files
    sink: { type: files, path: $DIR/out }
YAML
echo "ledger: $(du -h "$DIR/emitted.ledger" | cut -f1), files: $(du -sh "$DIR/out" | cut -f1)" >&2
/usr/bin/time -f "wall %e s, user %U s, sys %S s, peak RSS %M KiB" "$BIN" reconcile --config "$DIR/sluice.yaml" --ledger "$DIR/emitted.ledger"
