//! Submitting on SQLite and on PostgreSQL, one operation per transaction
//! (`Store::submit`) against many per transaction (`Store::submit_all`,
//! what `POST /v1/ops/batch` and `backstop ops submit --from` use): 10,000
//! operations, each with its own key, to 3 nodes (30,000 deliveries), in
//! batches of [`MAX_BATCH`], no dispatcher running. Each case starts on an
//! empty store; the ratio is bulk over one by one, in the same run.
//! PostgreSQL then submits one by one and in bulk again into a store that
//! already holds a history of finished deliveries (`HISTORY`, 1,000,000;
//! a tenth with `--quick`), as a coordinator that has run for a while
//! does: what a submission costs when the tables and their statistics are
//! large.
//! Last, PostgreSQL's floor: the same rows (each batch's operations and
//! their pending deliveries) written into an empty schema with one plain
//! `INSERT` per table and batch, nothing looked up, locked or superseded —
//! what this machine's server takes to store a batch at all, the bound
//! any submission of the same rows stays under.
//!
//! `cargo bench -p backstop-queue --bench submit` (`-- --quick` for a
//! tenth of the work). PostgreSQL comes from `BACKSTOP_BENCH_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`); each case gets a
//! schema of its own. `BACKEND=sqlite` or `BACKEND=postgres` runs one.

use std::time::{Instant, SystemTime};

use backstop_core::time::to_millis;
use backstop_queue::api::MAX_BATCH;
use backstop_queue::{NewOp, NodeSpec, PostgresStore, SqliteStore, Store};
use backstop_store::postgres::postgres::{Client, NoTls};
use backstop_store::postgres::testing::TestSchema;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let ops = if quick { 1_000 } else { 10_000 };
    let history: usize = std::env::var("HISTORY")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(if quick { 100_000 } else { 1_000_000 });
    let server = std::env::var("BACKSTOP_BENCH_POSTGRES")
        .unwrap_or_else(|_| backstop_store::postgres::testing::server_url());
    let only = std::env::var("BACKEND").ok();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|b| b != backend) {
            continue;
        }
        let mut rates = Vec::new();
        let cases: &[(usize, usize)] = match backend {
            "postgres" => &[(1, 0), (MAX_BATCH, 0), (1, history), (MAX_BATCH, history)],
            _ => &[(1, 0), (MAX_BATCH, 0)],
        };
        for &(batch, history) in cases {
            // Kept until the case ends: the store lives in it.
            let dir = tempfile::tempdir().expect("a temporary directory");
            let mut schema = None;
            let store: Box<dyn Store> = if backend == "sqlite" {
                Box::new(SqliteStore::open(dir.path().join("bench.db")).expect("open"))
            } else {
                let url = schema.insert(TestSchema::on(&server, "bench_submit")).url();
                Box::new(PostgresStore::open(url).expect("open"))
            };
            register(&*store);
            // The filling connection stays open (idle) until the case ends:
            // its server process's CPU time would leave the sum as it exits.
            let _filled = schema
                .as_ref()
                .filter(|_| history > 0)
                .map(|schema| fill(schema.url(), history));
            let (cpu, server) = (cpu_seconds("self"), server_cpu_seconds());
            let rate = submit(&*store, ops, batch);
            let server = match backend {
                "postgres" => format!(
                    ", {:.2} s in PostgreSQL's processes",
                    server_cpu_seconds() - server
                ),
                _ => String::new(),
            };
            let history = match history {
                0 => String::new(),
                n => format!(", with {n} finished deliveries"),
            };
            println!(
                "{backend}: {ops} operations x 3 nodes, {batch} per transaction{history}: \
                 {rate:.0} operations/s ({:.2} s of CPU in this process{server}, for {:.2} s)",
                cpu_seconds("self") - cpu,
                ops as f64 / rate
            );
            rates.push(rate);
        }
        println!("{backend}: bulk {:.1}x one by one", rates[1] / rates[0]);
        if let [one, bulk, one_later, bulk_later] = rates[..] {
            println!(
                "{backend}: with the history, one by one {:.2}x and in bulk {:.2}x without",
                one_later / one,
                bulk_later / bulk
            );
        }
        if backend == "postgres" {
            let schema = TestSchema::on(&server, "bench_submit");
            // The store makes its tables and indexes; the rows go in apart.
            let store = PostgresStore::open(schema.url()).expect("open");
            let (server_cpu, floor) = (server_cpu_seconds(), write_rows(schema.url(), ops));
            println!(
                "postgres: the floor, the same rows written by plain INSERTs, \
                 {MAX_BATCH} operations per transaction: {floor:.0} operations/s \
                 ({:.2} s in PostgreSQL's processes); bulk submission {:.2}x the floor",
                server_cpu_seconds() - server_cpu,
                rates[1] / floor
            );
            drop(store);
        }
    }
}

/// Registers the 3 nodes the operations go to.
fn register(store: &dyn Store) {
    for i in 1..=3 {
        let node = NodeSpec {
            name: format!("gpu-{i}"),
            node_type: "gpu".into(),
            kinds: vec!["install".into()],
            capacity: 4,
            transport: "local".into(),
            session: "bench".into(),
            declaration: None,
        }
        .validate()
        .expect("a node");
        store.register(&node, SystemTime::now()).expect("register");
    }
}

/// Adds `n` finished deliveries (and their operations, three deliveries
/// each, every one with a key of its own and so still live, as the store
/// leaves them) straight into the PostgreSQL schema at `url`, then has the
/// server gather its statistics, as its autovacuum would. Returns the
/// connection it used.
fn fill(url: &str, n: usize) -> Client {
    let mut client = Client::connect(url, NoTls).expect("connect");
    let ops = i64::try_from(n / 3).expect("a count");
    client
        .execute(
            "INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only, op_key,
                 payload, live, created_ms)
             SELECT 'install', 'gpu', NULL, 0, 'old-' || i, '{}', 1, 0
             FROM generate_series(1, $1::bigint) i",
            &[&ops],
        )
        .expect("operations");
    client
        .batch_execute(
            "INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state, attempt,
                 failures, tries, next_at_ms, created_ms, updated_ms, finished_ms)
             SELECT o.id, n, 'install', o.op_key, 'done', 1, 0, 0, 0, 0, 0, 0
             FROM backstop_queue_ops o, unnest(ARRAY['gpu-1', 'gpu-2', 'gpu-3']) n;
             ANALYZE",
        )
        .expect("deliveries");
    client
}

/// Writes the rows a bulk submission of `ops` operations to the 3 nodes
/// writes — the operations, live, each with its key, and a pending
/// delivery per operation and node — [`MAX_BATCH`] operations per
/// transaction, one `INSERT` per table and batch through the store's own
/// schema (its tables and indexes): how many operations per second.
fn write_rows(url: &str, ops: usize) -> f64 {
    let mut client = Client::connect(url, NoTls).expect("connect");
    let keys: Vec<String> = (0..ops).map(|i| format!("model-{i}")).collect();
    let started = Instant::now();
    for chunk in keys.chunks(MAX_BATCH) {
        let now = to_millis(SystemTime::now());
        let written = client
            .execute(
                "WITH o AS (
                     INSERT INTO backstop_queue_ops (kind, node_type, nodes, present_only,
                         op_key, payload, live, created_ms)
                     SELECT 'install', 'gpu', NULL, 0, k, '{}', 1, $2
                     FROM unnest($1::text[]) k
                     RETURNING id, op_key)
                 INSERT INTO backstop_queue_deliveries (op, node, kind, op_key, state,
                     attempt, failures, tries, next_at_ms, created_ms, updated_ms)
                 SELECT o.id, n, 'install', o.op_key, 'pending', 0, 0, 0, $2, $2, $2
                 FROM o, unnest(ARRAY['gpu-1', 'gpu-2', 'gpu-3']) n",
                &[&chunk, &now],
            )
            .expect("the rows");
        assert_eq!(written, 3 * chunk.len() as u64);
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// Submits `ops` operations to the 3 nodes, `batch` per transaction: how
/// many per second.
fn submit(store: &dyn Store, ops: usize, batch: usize) -> f64 {
    let all: Vec<NewOp> = (0..ops)
        .map(|i| NewOp::for_type("install", "gpu").key(format!("model-{i}")))
        .collect();
    let started = Instant::now();
    for chunk in all.chunks(batch) {
        let submitted = store
            .submit_all(chunk, SystemTime::now())
            .expect("submitted");
        assert_eq!(submitted.len(), chunk.len());
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

/// CPU time process `pid` (or "self") has used (user and system), in
/// seconds, from `/proc/PID/stat` (ticks of 1/100 s); 0 where there is
/// none. Beside the wall time it shows how much of a run waited for the
/// CPU on a machine busy with other work.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime: fields 14 and 15 of the line, 12 and 13 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time used by every `postgres` process on this machine (the server
/// the bench uses, when it is local; whatever else uses it counts too).
fn server_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| cpu_seconds(&pid))
        .sum()
}
