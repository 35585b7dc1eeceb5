//! What the HTTP client's look at a host's shared cooldown costs before
//! every request: `HostLedger::until`, one indexed read of a ledger of
//! 10,000 entries (the host's among them), against the floor of the same
//! read written by hand — the statement the store runs (the entry's nine
//! columns by primary key), prepared once, on a connection of its own —
//! measured in the same run; and the look as the client makes it, off the
//! async runtime (`spawn_blocking` on a multi-thread runtime, as
//! `backstop` runs).
//!
//! Run: `cargo bench -p backstop-ledger --bench host_look`. PostgreSQL
//! comes from `BACKSTOP_BENCH_POSTGRES` (default: the tests' server); each
//! run gets a schema of its own. Figures are recorded in
//! docs/benchmarks.md.

use std::hint::black_box;
use std::sync::Arc;

use backstop_core::StateLocation;
use backstop_core::hosts::HostCooldowns;
use backstop_ledger::{HostLedger, Key};
use backstop_store::postgres::postgres::{Client, NoTls};
use backstop_store::postgres::testing::TestSchema;
use criterion::{Criterion, criterion_group, criterion_main};

const ENTRIES: u32 = 10_000;
const HOST: &str = "huggingface.co";

/// The rows every store gets: `ENTRIES - 1` models, and the host.
const FILL: &str = "INSERT INTO backstop_cooldowns
    (key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms)
    VALUES ($1, 'rate_limit', 1800000000000, 'header', 'HTTP 429', 1, NULL, 1700000000000, 1700000000000)";

/// The store's read, as SQLite and PostgreSQL each spell it.
const COLUMNS: &str =
    "key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms";

fn keys() -> impl Iterator<Item = String> {
    (1..ENTRIES)
        .map(|i| format!("provider{}/model-{i}", i % 50))
        .chain(std::iter::once(
            Key::host(HOST).unwrap().as_str().to_owned(),
        ))
}

/// A ledger opened (migrated) by `HostLedger` itself, then filled.
fn opened(location: StateLocation) -> Arc<HostLedger> {
    let hosts = Arc::new(HostLedger::new(location));
    let refusal = backstop_core::hosts::HostRefusal {
        status: 429,
        quota: false,
        until: std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
        from_body: false,
        message: "HTTP 429".into(),
    };
    hosts.cool("setup.example", &refusal).unwrap();
    hosts
}

fn looks(c: &mut Criterion, name: &str, hosts: Arc<HostLedger>, floor: &mut dyn FnMut() -> i64) {
    assert!(
        hosts.until(HOST).unwrap().is_some(),
        "the host is in the ledger"
    );
    let mut group = c.benchmark_group(format!("host look, {name}, {ENTRIES} entries"));
    group.bench_function("hand-written prepared SELECT (floor)", |b| {
        b.iter(|| black_box(floor()))
    });
    group.bench_function("HostLedger::until", |b| {
        b.iter(|| black_box(hosts.until(black_box(HOST)).unwrap()))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    group.bench_function(
        "HostLedger::until via spawn_blocking (as the client)",
        |b| {
            b.to_async(&runtime).iter(|| {
                let hosts = Arc::clone(&hosts);
                async move {
                    tokio::task::spawn_blocking(move || hosts.until(HOST).unwrap())
                        .await
                        .unwrap()
                }
            })
        },
    );
    group.finish();
}

fn sqlite(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backstop.db");
    let hosts = opened(StateLocation::Sqlite(path.clone()));
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    let tx = conn.transaction().unwrap();
    for key in keys() {
        tx.execute(FILL, [key]).unwrap();
    }
    tx.commit().unwrap();
    let host = Key::host(HOST).unwrap().as_str().to_owned();
    let sql = format!("SELECT {COLUMNS} FROM backstop_cooldowns WHERE key IN (?)");
    let mut floor = || {
        conn.prepare_cached(&sql)
            .unwrap()
            .query_row([&host], |r| r.get::<_, i64>(2))
            .unwrap()
    };
    looks(c, "SQLite", hosts, &mut floor);
}

fn postgres(c: &mut Criterion) {
    let server = std::env::var("BACKSTOP_BENCH_POSTGRES")
        .unwrap_or_else(|_| backstop_store::postgres::testing::server_url());
    let schema = TestSchema::on(&server, "bs_bench_hosts");
    let hosts = opened(StateLocation::Postgres(schema.url().to_owned()));
    let mut client = Client::connect(schema.url(), NoTls).unwrap();
    let mut tx = client.transaction().unwrap();
    let fill = tx.prepare(FILL).unwrap();
    for key in keys() {
        tx.execute(&fill, &[&key]).unwrap();
    }
    tx.commit().unwrap();
    client.batch_execute("ANALYZE backstop_cooldowns").unwrap();
    let statement = client
        .prepare(&format!(
            "SELECT {COLUMNS} FROM backstop_cooldowns WHERE key = ANY($1)"
        ))
        .unwrap();
    let host = Key::host(HOST).unwrap().as_str().to_owned();
    let names = vec![host.as_str()];
    let mut floor = || {
        client
            .query_one(&statement, &[&names])
            .unwrap()
            .get::<_, i64>(2)
    };
    looks(c, "PostgreSQL", hosts, &mut floor);
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
