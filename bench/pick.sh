#!/usr/bin/env bash
# `backstop pick` from process start to exit with 10,000 entries in the
# ledger. Target: median under 5 ms. Needs hyperfine (apt-get install
# hyperfine) and python3 (to fill the ledger quickly).
#
#   bench/pick.sh            # release build, 10,000 entries
#   ENTRIES=100000 bench/pick.sh
#   BACKSTOP_BIN=/path/to/backstop bench/pick.sh   # a binary built before
set -euo pipefail
cd "$(dirname "$0")/.."
entries=${ENTRIES:-10000}
command -v hyperfine >/dev/null || { echo "bench/pick.sh needs hyperfine (apt-get install hyperfine)" >&2; exit 2; }

if [ -z "${BACKSTOP_BIN:-}" ]; then
  cargo build --release --quiet
fi
bin=${BACKSTOP_BIN:-target/release/backstop}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
export BACKSTOP_STATE="$dir/backstop.db"

# Let backstop create and migrate the ledger, then fill it directly.
"$bin" cooldown list >/dev/null
python3 - "$BACKSTOP_STATE" "$entries" <<'PY'
import sqlite3, sys, time
path, n = sys.argv[1], int(sys.argv[2])
now = int(time.time() * 1000)
rows = []
for i in range(n):
    key = f"provider{i % 97}/model-{i}" if i % 10 else f"account{i}"
    reason = "quota" if i % 10 == 0 else "rate_limit"
    rows.append((key, reason, now + 3600_000, "default", "HTTP 429", 1, None, now, now))
db = sqlite3.connect(path)
db.executemany("INSERT OR REPLACE INTO backstop_cooldowns VALUES (?,?,?,?,?,?,?,?,?)", rows)
db.commit()
print(f"ledger: {db.execute('select count(*) from backstop_cooldowns').fetchone()[0]} entries", file=sys.stderr)
PY

# Five models: the first four cooling (two by their model, two by their
# provider), the fifth free.
models="provider1/model-1 provider2/model-2 account10/model-x account20/model-y free/model"
"$bin" pick $models
hyperfine -N --warmup 20 --runs 500 --export-json "$dir/pick.json" \
  -n "backstop pick (${entries} entries)" "$bin pick $models" \
  -n "true (process start floor)" "true"
python3 - "$dir/pick.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
pick, floor = r[0], r[1]
print(f"\nmedian {pick['median']*1000:.2f} ms (mean {pick['mean']*1000:.2f} ms, "
      f"min {pick['min']*1000:.2f} ms); process-start floor median {floor['median']*1000:.2f} ms; "
      f"ratio to the floor {pick['median']/floor['median']:.1f}x")
PY
