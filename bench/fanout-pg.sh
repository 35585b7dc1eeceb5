#!/usr/bin/env bash
# Fan-out on PostgreSQL: backstop's queue (one coordinator, then two) and
# its peer apalis (one worker, then two) on the same server in the same
# run, the same number of jobs, no-op handlers; prints each and the ratios.
# Two modes: live (submitted while running: the rate and the latency from
# submit to handler start) and backlog (everything submitted first, then
# the runners timed: what claiming, running and storing outcomes sustain).
# backstop: 10,000 operations x 3 nodes = 30,000 deliveries, submitted by 4
# threads (crates/queue/benches/fanout_pg.rs). apalis 1.0 + apalis-postgres
# 1.0: 30,000 jobs pushed three to a call by 4 tasks (bench/apalis-pg).
#
#   bench/fanout-pg.sh                      # PostgreSQL at 127.0.0.1:5432, database test
#   BACKSTOP_BENCH_POSTGRES=postgres://u@host/db bench/fanout-pg.sh
#   ROUNDS=3 bench/fanout-pg.sh             # each case three times, interleaved
set -euo pipefail
cd "$(dirname "$0")/.."
export BACKSTOP_BENCH_POSTGRES=${BACKSTOP_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}
rounds=${ROUNDS:-1}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

cargo bench -p backstop-queue --bench fanout_pg --no-run --quiet 2>/dev/null || \
  cargo bench -p backstop-queue --bench fanout_pg --no-run
cargo build --release --quiet --manifest-path bench/apalis-pg/Cargo.toml
peer=bench/apalis-pg/target/release/apalis-pg-peer

for round in $(seq "$rounds"); do
  for mode in live backlog; do
    for n in 1 2; do
      MODE=$mode COORDINATORS=$n cargo bench -q -p backstop-queue --bench fanout_pg 2>/dev/null | grep '^backstop ' | tee -a "$out/results"
      MODE=$mode JOBS=30000 WORKERS=$n "$peer" | tee -a "$out/results"
    done
  done
done

python3 - "$out/results" <<'PY'
import sys, statistics
runs = {}
for line in open(sys.argv[1]):
    who, *fields = line.split()
    kv = dict(f.split("=", 1) for f in fields)
    n = kv.get("coordinators") or kv.get("workers")
    runs.setdefault((who, kv["mode"], n), []).append(kv)
def med(who, mode, n, key):
    return statistics.median(float(r[key]) for r in runs[(who, mode, n)])
print()
print("medians of", len(runs[("backstop", "live", "1")]), "runs")
print("| mode | runners | backstop deliveries/s | apalis jobs/s | ratio | backstop p50 / p99 | apalis p50 / p99 |")
print("|---|---|---|---|---|---|---|")
for mode in ("live", "backlog"):
    for n in ("1", "2"):
        b, a = med("backstop", mode, n, "rate"), med("apalis", mode, n, "rate")
        lat = lambda who: (f"{med(who, mode, n, 'p50_ms'):.1f} / {med(who, mode, n, 'p99_ms'):.1f} ms"
                           if mode == "live" else "—")
        print(f"| {mode} | {n} | {b:,.0f} | {a:,.0f} | **{b / a:.2f}x** | {lat('backstop')} | {lat('apalis')} |")
PY
