#!/usr/bin/env bash
# A coordinator's memory with a long history: the state of a fleet that
# has finished DELIVERIES deliveries (default 1,000,000: 333,334
# operations x 3 nodes, done, within the retention window), on SQLite or
# on PostgreSQL, then `backstop serve` on it, asked what an operator asks
# (the listings, a delivery's attempts, health) and given 200 new
# operations to deliver; its peak resident memory (VmHWM) is what is
# reported, against the 200 MiB the project allows.
#
#   bench/coordinator-memory.sh
#   DELIVERIES=3000000 bench/coordinator-memory.sh
#   STORE=postgres bench/coordinator-memory.sh    # a schema of its own at BACKSTOP_BENCH_POSTGRES
#   BACKSTOP_BIN=/path/to/backstop bench/coordinator-memory.sh   # a binary built before
set -euo pipefail
cd "$(dirname "$0")/.."
deliveries=${DELIVERIES:-1000000}
ops=$(( (deliveries + 2) / 3 ))
if [ -z "${BACKSTOP_BIN:-}" ]; then
  cargo build --release --quiet
fi
bin=${BACKSTOP_BIN:-$PWD/target/release/backstop}
store=${STORE:-sqlite}
server=${BACKSTOP_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
schema=bench_memory_$$
dir=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  if [ "$store" = postgres ]; then
    psql -q "$server" -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export BACKSTOP_SERVER=http://127.0.0.1:$port
case $store in
  sqlite) export BACKSTOP_STATE=$dir/state.db ;;
  postgres)
    psql -q "$server" -c "CREATE SCHEMA $schema"
    export BACKSTOP_STATE="$server?options=-csearch_path%3D$schema"
    # With a database as state there is no file to keep a token in.
    BACKSTOP_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
    export BACKSTOP_TOKEN ;;
  *) echo "STORE is sqlite or postgres" >&2; exit 2 ;;
esac
cat > backstop.toml <<TOML
[[node]]
name = "cpu-1"
type = "cpu"
handle = { install = "true" }
[[node]]
name = "cpu-2"
type = "cpu"
handle = { install = "true" }
[[node]]
name = "cpu-3"
type = "cpu"
handle = { install = "true" }
TOML

serve() {
  "$bin" serve --listen "127.0.0.1:$port" --config backstop.toml >"$dir/serve.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do
    curl -sf "$BACKSTOP_SERVER/healthz" >/dev/null && return
    sleep 0.05
  done
  echo "backstop serve did not start:" >&2; cat "$dir/serve.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

# The schema, as backstop makes it; then the history, written straight
# into the tables backstop reads (finished a minute ago, so retention
# keeps it).
serve; stop
now=$(( $(date +%s) * 1000 - 60000 ))
if [ "$store" = postgres ]; then
  # The same rows, then the statistics autovacuum would gather.
  PGOPTIONS="-c search_path=$schema" psql -q "$server" <<SQL
INSERT INTO backstop_queue_ops (kind, node_type, present_only, op_key, payload, live, created_ms)
  SELECT 'install', 'cpu', 1, 'model-' || i, '{"model":"' || i || '"}', 0, $now
  FROM generate_series(1, $ops) i;
INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt, failures, tries,
    next_at_ms, created_ms, updated_ms, finished_ms)
  SELECT o.id, n, o.kind, o.op_key, 'done', 1, 0, 1, o.created_ms, o.created_ms, o.created_ms,
    o.created_ms
  FROM backstop_queue_ops o, unnest(ARRAY['cpu-1', 'cpu-2', 'cpu-3']) n;
ANALYZE;
SELECT 'history: ' || count(*) || ' deliveries' FROM backstop_queue_deliveries;
SQL
else
python3 - "$BACKSTOP_STATE" "$ops" "$now" <<'PY'
import sqlite3, sys
db, ops, now = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = sqlite3.connect(db)
c.execute("""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
  INSERT INTO backstop_queue_ops (kind, node_type, present_only, op_key, payload, live, created_ms)
  SELECT 'install', 'cpu', 1, 'model-' || i, '{"model":"' || i || '"}', 0, ? FROM n""", (ops, now))
for node in ("cpu-1", "cpu-2", "cpu-3"):
    c.execute("""INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
        failures, tries, next_at_ms, created_ms, updated_ms, finished_ms)
      SELECT id, ?, kind, op_key, 'done', 1, 0, 1, created_ms, created_ms, created_ms, created_ms
      FROM backstop_queue_ops""", (node,))
c.commit()
print("history:", c.execute("SELECT count(*) FROM backstop_queue_deliveries").fetchone()[0], "deliveries")
PY
fi

start=$(date +%s.%N)
serve
"$bin" ops list --limit 100 >/dev/null
"$bin" ops list --having done --limit 1000 >/dev/null
"$bin" ops list --dead >/dev/null
"$bin" nodes list >/dev/null
"$bin" ops show 1 >/dev/null
for i in $(seq 200); do
  "$bin" ops submit install --type cpu --key "new-$i" >/dev/null
done
until [ "$("$bin" ops list --having pending --json | wc -l)" = 0 ] && \
      [ "$("$bin" ops list --having in_flight --json | wc -l)" = 0 ]; do sleep 0.2; done
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
end=$(date +%s.%N)
stop
python3 - "$hwm" "$rss" "$deliveries" "$start" "$end" "$store" <<'PY'
import sys
hwm, rss, n, start, end = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"coordinator store={sys.argv[6]} deliveries_in_history={n} peak_rss_mib={hwm/1024:.1f} rss_mib={rss/1024:.1f} "
      f"limit_mib=200 {'met' if hwm/1024 <= 200 else 'MISSED'} seconds={end-start:.1f}")
PY
