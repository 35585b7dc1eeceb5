//! The ledger as the HTTP client's shared store of hosts' cooldowns
//! (`HostLedger`), on SQLite and on PostgreSQL: what one process records,
//! another reads; a look creates nothing; a ledger that cannot be opened
//! is an error naming it, never a panic.

use std::time::{Duration, SystemTime};

use backstop_core::StateLocation;
use backstop_core::hosts::{HostCooldowns, HostRefusal};
use backstop_ledger::{HostLedger, Key, Ledger};
use backstop_store::postgres::testing::TestSchema;

fn refusal(status: u16, wait: Duration) -> HostRefusal {
    HostRefusal {
        status,
        quota: false,
        until: SystemTime::now() + wait,
        from_body: false,
        message: format!("HTTP {status}"),
    }
}

/// The entry of `host` as `cooldown list` reads it.
fn entry(location: &StateLocation, host: &str) -> Option<backstop_ledger::Entry> {
    let ledger = Ledger::new(backstop_ledger::store::open(location).unwrap());
    let key = Key::host(host).unwrap();
    ledger
        .list()
        .unwrap()
        .into_iter()
        .map(|(e, _)| e)
        .find(|e| e.key == key)
}

fn shares_between_processes(location: StateLocation) {
    let (one, two) = (
        HostLedger::new(location.clone()),
        HostLedger::new(location.clone()),
    );
    let host = "127.0.0.1:8080";
    assert_eq!(two.until(host).unwrap(), None);

    let asked = refusal(429, Duration::from_secs(30));
    let stored = one.cool(host, &asked).unwrap();
    let millis = |t: SystemTime| backstop_core::time::to_millis(t);
    assert_eq!(millis(stored), millis(asked.until));
    assert_eq!(
        two.until(host).unwrap(),
        Some(stored),
        "another process reads it"
    );
    let e = entry(&location, host).unwrap();
    assert_eq!(e.reason, backstop_ledger::Reason::RateLimit);
    assert_eq!(e.source, backstop_ledger::Source::Header);
    assert_eq!(e.last_error.as_deref(), Some("HTTP 429"));

    let shorter = refusal(503, Duration::from_secs(5));
    assert_eq!(two.cool(host, &shorter).unwrap(), stored, "never shortened");

    assert!(!two.clear(host, stored - Duration::from_secs(1)).unwrap());
    assert!(two.clear(host, stored).unwrap());
    assert_eq!(one.until(host).unwrap(), None);

    let mut overload = refusal(503, Duration::from_secs(10));
    overload.from_body = true;
    one.cool("[::1]:5000", &overload).unwrap();
    let e = entry(&location, "[::1]:5000").unwrap();
    assert_eq!(e.reason, backstop_ledger::Reason::Overloaded);
    assert_eq!(e.source, backstop_ledger::Source::Body);

    let mut quota = refusal(429, Duration::from_secs(10));
    quota.quota = true;
    one.cool("api.openai.com", &quota).unwrap();
    assert_eq!(
        entry(&location, "api.openai.com").unwrap().reason,
        backstop_ledger::Reason::Quota
    );

    let over = refusal(429, Duration::ZERO);
    one.cool("over.example", &over).unwrap();
    assert_eq!(
        entry(&location, "over.example"),
        None,
        "a wait already over is not recorded"
    );

    assert!(
        one.until("bad host").is_err(),
        "not a host: an error, no panic"
    );
}

#[test]
fn a_sqlite_ledger_shares_hosts_and_a_look_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/backstop.db");
    let location = StateLocation::Sqlite(path.clone());
    let hosts = HostLedger::new(location.clone());
    assert_eq!(hosts.until("huggingface.co").unwrap(), None);
    assert!(!hosts.clear("huggingface.co", SystemTime::now()).unwrap());
    assert!(!path.exists(), "looking and clearing create no ledger");
    shares_between_processes(location);
}

#[test]
fn a_postgres_ledger_shares_hosts() {
    let schema = TestSchema::new("bs_ledger_hosts");
    shares_between_processes(StateLocation::Postgres(schema.url().to_owned()));
}

#[test]
fn a_ledger_that_cannot_be_opened_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.db");
    std::fs::write(&path, vec![0x5a; 4096]).unwrap();
    let hosts = HostLedger::new(StateLocation::Sqlite(path.clone()));
    let err = hosts.until("huggingface.co").unwrap_err();
    let shown = backstop_core::with_causes(&*err);
    assert!(shown.contains(&path.display().to_string()), "{shown}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        vec![0x5a; 4096],
        "left as it was"
    );
}
