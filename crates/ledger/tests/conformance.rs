//! One suite, every store: the promises of the `Store` trait, checked
//! against SQLite and against the PostgreSQL server on this machine.
//!
//! PostgreSQL comes from `BACKSTOP_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached the
//! PostgreSQL tests fail, loudly: they are never skipped.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use backstop_core::clock::ManualClock;
use backstop_ledger::store::{Change, Store, StoreError};
use backstop_ledger::{
    Durations, Entry, Key, Ledger, LedgerFailure, MAX_COOLDOWN, PostgresStore, Reason, Source,
    SqliteStore, State,
};
use backstop_store::postgres::testing::TestSchema;

/// A database the suite can open stores on and poke at directly.
trait Db: Send + Sync {
    fn open(&self) -> Result<Box<dyn Store>, StoreError>;
    fn exec(&self, sql: &str);
    /// Drops the column types and NOT NULLs of the cooldowns table, as a
    /// hand-made or older table might lack them.
    fn loosen(&self);
}

struct Sqlite {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/ledger.db");
        Sqlite { _dir: dir, path }
    }
}

impl Db for Sqlite {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(SqliteStore::open(&self.path)?))
    }
    fn exec(&self, sql: &str) {
        rusqlite_exec(&self.path, sql);
    }
    fn loosen(&self) {
        self.exec(
            "ALTER TABLE backstop_cooldowns RENAME TO strict;
             CREATE TABLE backstop_cooldowns (key TEXT PRIMARY KEY, reason, until_ms, source,
                 last_error, failures, fingerprint, created_ms, updated_ms);
             INSERT INTO backstop_cooldowns SELECT * FROM strict;
             DROP TABLE strict",
        );
    }
}

fn rusqlite_exec(path: &std::path::Path, sql: &str) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.execute_batch(sql).unwrap();
}

/// A PostgreSQL schema of its own for each test, dropped afterwards.
struct Postgres(TestSchema);

impl Postgres {
    fn new() -> Self {
        Postgres(TestSchema::new("bs_ledger"))
    }
}

impl Db for Postgres {
    fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        Ok(Box::new(PostgresStore::open(self.0.url())?))
    }
    fn exec(&self, sql: &str) {
        self.0.exec(sql);
    }
    fn loosen(&self) {
        self.exec(
            "ALTER TABLE backstop_cooldowns
                 ALTER COLUMN reason DROP NOT NULL,
                 ALTER COLUMN until_ms DROP NOT NULL,
                 ALTER COLUMN failures DROP NOT NULL,
                 ALTER COLUMN failures TYPE TEXT,
                 ALTER COLUMN created_ms TYPE DOUBLE PRECISION",
        );
    }
}

fn key(s: &str) -> Key {
    s.parse().unwrap()
}

fn entry(k: &str, failures: u32) -> Entry {
    Entry {
        key: key(k),
        reason: Reason::RateLimit,
        until: UNIX_EPOCH + Duration::from_millis(1_800_000_000_123),
        source: Source::Header,
        last_error: Some("HTTP 429: slow down ✓".to_owned()),
        failures,
        fingerprint: None,
        created: UNIX_EPOCH + Duration::from_millis(1_700_000_000_001),
        updated: UNIX_EPOCH + Duration::from_millis(1_700_000_000_999),
    }
}

fn put(store: &dyn Store, e: &Entry) -> Option<Entry> {
    let e = e.clone();
    store
        .update(&e.key.clone(), &mut |_| Change::Put(e.clone()))
        .unwrap()
}

// The suite. Each case takes the database and opens what it needs.

fn entries_read_back_as_written(db: &dyn Db) {
    let store = db.open().unwrap();
    let mut e = entry("anthropic/claude-sonnet-4-5", 3);
    e.reason = Reason::Auth;
    e.source = Source::Manual;
    e.fingerprint = Some("0123456789ab".into());
    assert_eq!(put(&*store, &e), Some(e.clone()));
    assert_eq!(
        store.get(std::slice::from_ref(&e.key)).unwrap(),
        [e.clone()]
    );
    assert_eq!(store.list().unwrap(), [e.clone()]);
    // Another handle (another process) sees the same.
    let other = db.open().unwrap();
    assert_eq!(other.list().unwrap(), [e]);
}

fn update_keeps_removes_and_reports(db: &dyn Db) {
    let store = db.open().unwrap();
    let k = key("openai/gpt-5");
    let mut seen = Vec::new();
    let after = store
        .update(&k, &mut |old| {
            seen.push(old.clone());
            Change::Keep
        })
        .unwrap();
    assert_eq!(after, None);
    assert_eq!(seen, [None]);
    let e = entry("openai/gpt-5", 1);
    put(&*store, &e);
    let after = store.update(&k, &mut |_| Change::Keep).unwrap();
    assert_eq!(after, Some(e.clone()));
    let mut old_seen = None;
    let after = store
        .update(&k, &mut |old| {
            old_seen = old;
            Change::Remove
        })
        .unwrap();
    assert_eq!(after, None);
    assert_eq!(old_seen, Some(e));
    assert!(store.list().unwrap().is_empty());
}

fn get_returns_only_what_exists(db: &dyn Db) {
    let store = db.open().unwrap();
    put(&*store, &entry("a/one", 1));
    put(&*store, &entry("b", 1));
    let mut got = store
        .get(&[key("a/one"), key("a/missing"), key("b")])
        .unwrap();
    got.sort_by(|x, y| x.key.cmp(&y.key));
    let keys: Vec<_> = got.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["a/one", "b"]);
    assert!(store.get(&[]).unwrap().is_empty());
}

fn lists_in_byte_order(db: &dyn Db) {
    let store = db.open().unwrap();
    for k in ["b", "a/a", "a/B", "a/_x", "a/Z"] {
        put(&*store, &entry(k, 1));
    }
    let keys: Vec<String> = store
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.key.as_str().to_owned())
        .collect();
    assert_eq!(keys, ["a/B", "a/Z", "a/_x", "a/a", "b"]);
}

fn removes_one_or_all(db: &dyn Db) {
    let store = db.open().unwrap();
    for k in ["a/1", "a/2", "a"] {
        put(&*store, &entry(k, 1));
    }
    assert!(store.remove(&key("a/1")).unwrap());
    assert!(!store.remove(&key("a/1")).unwrap());
    assert_eq!(store.remove_all().unwrap(), 2);
    assert_eq!(store.remove_all().unwrap(), 0);
}

fn concurrent_updates_lose_nothing(db: &dyn Db) {
    let handles: Vec<Arc<dyn Store>> = (0..8).map(|_| Arc::from(db.open().unwrap())).collect();
    let k = key("anthropic/claude-opus-4-1");
    std::thread::scope(|s| {
        for store in &handles {
            let k = k.clone();
            s.spawn(move || {
                for _ in 0..40 {
                    store
                        .update(&k, &mut |old| {
                            let mut e = old.unwrap_or_else(|| entry(k.as_str(), 0));
                            e.failures += 1;
                            Change::Put(e)
                        })
                        .unwrap();
                }
            });
        }
    });
    let got = handles[0].get(std::slice::from_ref(&k)).unwrap();
    assert_eq!(got[0].failures, 320, "every increment landed");
}

fn reopening_migrates_once(db: &dyn Db) {
    let first = db.open().unwrap();
    put(&*first, &entry("a/b", 1));
    // Opening again (and again at once from many threads) finds the schema
    // in place and keeps the data.
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| db.open().unwrap());
        }
    });
    assert_eq!(db.open().unwrap().list().unwrap().len(), 1);
}

fn a_newer_schema_is_refused(db: &dyn Db) {
    db.open().unwrap();
    db.exec("UPDATE backstop_schema SET version = 99 WHERE component = 'ledger'");
    match db.open() {
        Err(StoreError::TooNew { found, .. }) => assert_eq!(found, 99),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a ledger of a newer schema"),
    }
}

/// Rows written by hand, by another version or on another machine, that
/// the schema accepts: out of range, from a newer version, an unreadable key.
const ODD_ROWS: &str = "INSERT INTO backstop_cooldowns
    (key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms)
    VALUES
    ('a/huge', 'rate_limit', 9223372036854775807, 'header', NULL, 9223372036854775807, NULL, 0, 9223372036854775807),
    ('a/negative', 'error', -5, 'default', NULL, -3, NULL, -1, -9223372036854775808),
    ('a/odd', 'reason_from_the_future', 1800003600000, 'carrier_pigeon', 'it was odd', 2, NULL, 0, 0),
    ('not a key!', 'error', 0, 'default', NULL, 1, NULL, 0, 0)";

/// Rows only a loosened table ([`Db::loosen`]) takes: NULLs and other types.
const LOOSE_ROWS: &str = "INSERT INTO backstop_cooldowns
    (key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms)
    VALUES
    ('b/null', NULL, NULL, 'manual', NULL, NULL, NULL, 0, 0),
    ('b/typed', 'quota', 1800003600000, 'tool', NULL, 'lots', NULL, 1.5e300, 0)";

fn stored_values_of_any_shape_are_read(db: &dyn Db) {
    use backstop_core::time::latest;
    let store = db.open().unwrap();
    put(&*store, &entry("a/good", 1));
    db.exec(ODD_ROWS);
    let listed = store.list().unwrap();
    let by_key = |k: &str| listed.iter().find(|e| e.key.as_str() == k).unwrap().clone();
    assert_eq!(listed.len(), 4, "all but the unreadable key: {listed:?}");
    assert_eq!(by_key("a/good"), entry("a/good", 1));
    let huge = by_key("a/huge");
    assert_eq!((huge.until, huge.updated), (latest(), latest()));
    assert_eq!(huge.failures, u32::MAX);
    let negative = by_key("a/negative");
    assert_eq!(
        (
            negative.until,
            negative.created,
            negative.updated,
            negative.failures
        ),
        (UNIX_EPOCH, UNIX_EPOCH, UNIX_EPOCH, 0)
    );
    let odd = by_key("a/odd");
    assert_eq!(
        (odd.reason, odd.source, odd.failures),
        (Reason::Error, Source::Default, 2)
    );
    assert_eq!(
        odd.last_error.as_deref(),
        Some("stored reason \"reason_from_the_future\" is unknown to this backstop: it was odd")
    );
    assert_eq!(store.get(&[key("a/huge")]).unwrap(), [huge]);

    // The ledger on top holds a deadline to a year and picks around it.
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ledger = Ledger::new(db.open().unwrap())
        .with_clock(Arc::new(ManualClock::new(now)))
        .with_durations(Durations::default().jitter(0.0));
    let pick = ledger
        .pick(&[key("a/huge"), key("a/odd"), key("a/negative")])
        .unwrap();
    assert_eq!(pick.available, Some(key("a/negative")));
    assert_eq!(pick.blocked[0].1.until, now + MAX_COOLDOWN);
    assert_eq!(pick.blocked[1].1.until, now + Duration::from_secs(3600));
    let states: Vec<_> = ledger
        .list()
        .unwrap()
        .into_iter()
        .map(|(e, s)| (e.key.as_str().to_owned(), s))
        .collect();
    assert_eq!(
        states,
        [
            ("a/good".to_owned(), State::Cooling),
            ("a/huge".to_owned(), State::Cooling),
            ("a/negative".to_owned(), State::Expired),
            ("a/odd".to_owned(), State::Cooling),
        ]
    );
    // Recording over an odd row heals it.
    let e = ledger
        .record(&key("a/huge"), &LedgerFailure::new(Reason::RateLimit))
        .unwrap();
    assert_eq!(e.until, now + MAX_COOLDOWN);
    assert_eq!(store.get(&[key("a/huge")]).unwrap(), [e]);

    // A table without its types and NOT NULLs is read too.
    db.loosen();
    db.exec(LOOSE_ROWS);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 6, "{listed:?}");
    let by_key = |k: &str| listed.iter().find(|e| e.key.as_str() == k).unwrap().clone();
    let null = by_key("b/null");
    assert_eq!(
        (null.reason, null.until, null.failures),
        (Reason::Error, UNIX_EPOCH, 0)
    );
    let typed = by_key("b/typed");
    assert_eq!(
        (typed.reason, typed.failures, typed.created),
        (Reason::Quota, 0, latest())
    );
    assert!(ledger.pick(&[key("b/null")]).unwrap().available.is_some());
}

fn locations_name_no_password(db: &dyn Db) {
    let store = db.open().unwrap();
    let location = store.location();
    assert!(location.starts_with("sqlite:") || location.starts_with("postgres://"));
    assert!(!location.contains('@'), "{location}");
}

macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::Sqlite::new());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    super::$case(&super::Postgres::new());
                }
            )*
        }
    };
}

suite!(
    entries_read_back_as_written,
    update_keeps_removes_and_reports,
    get_returns_only_what_exists,
    lists_in_byte_order,
    removes_one_or_all,
    concurrent_updates_lose_nothing,
    reopening_migrates_once,
    a_newer_schema_is_refused,
    stored_values_of_any_shape_are_read,
    locations_name_no_password,
);

#[test]
fn an_unreachable_postgres_is_a_temporary_open_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = PostgresStore::open(&format!("postgres://user:hunter2@127.0.0.1:{port}/db"))
        .err()
        .expect("nothing listens there");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.is_temporary());
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
}
