//! The ledger's rules on a manual clock: scopes, lengths, escalation,
//! decay, credential changes, manual cooldowns and picking.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backstop_core::clock::ManualClock;
use backstop_ledger::{
    Credentials, Key, Ledger, LedgerFailure, Reason, Set, Source, SqliteStore, State,
};

const MIN: Duration = Duration::from_secs(60);

/// Credentials a test can change, as a user logging in again would.
#[derive(Default)]
struct Logins(Mutex<HashMap<String, String>>);

impl Logins {
    fn set(&self, provider: &str, fingerprint: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(provider.into(), fingerprint.into());
    }
}

impl Credentials for Logins {
    fn fingerprint(&self, provider: &str) -> Option<String> {
        self.0.lock().unwrap().get(provider).cloned()
    }
}

struct World {
    _dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    logins: Arc<Logins>,
    ledger: Ledger,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let logins = Arc::new(Logins::default());
    let store = SqliteStore::open(dir.path().join("ledger.db")).unwrap();
    let ledger = Ledger::new(Box::new(store))
        .with_clock(clock.clone())
        .with_credentials(logins.clone())
        .with_durations(backstop_ledger::Durations::default().jitter(0.0));
    World {
        _dir: dir,
        clock,
        logins,
        ledger,
    }
}

impl World {
    fn now(&self) -> SystemTime {
        use backstop_core::clock::Clock;
        self.clock.now()
    }
}

fn key(s: &str) -> Key {
    s.parse().unwrap()
}

fn wait(until: SystemTime, source: Source) -> LedgerFailure {
    LedgerFailure {
        reason: Reason::RateLimit,
        wait: Some((until, source)),
        message: None,
    }
}

#[test]
fn a_rate_limit_cools_the_model_and_pick_falls_back() {
    let w = world();
    let (sonnet, opus, gpt) = (
        key("anthropic/claude-sonnet-4-5"),
        key("anthropic/claude-opus-4-1"),
        key("openai/gpt-5"),
    );
    let e = w
        .ledger
        .record(&sonnet, &LedgerFailure::new(Reason::RateLimit))
        .unwrap();
    assert_eq!(e.key, sonnet);
    assert_eq!(e.until, w.now() + MIN);
    assert_eq!(e.source, Source::Default);
    let pick = w.ledger.pick(&[sonnet.clone(), opus.clone(), gpt]).unwrap();
    assert_eq!(
        pick.available,
        Some(opus),
        "same provider, other model: fine"
    );
    assert_eq!(pick.blocked.len(), 1);
    assert_eq!(pick.blocked[0].0, sonnet);
}

#[test]
fn quota_and_auth_cool_the_whole_provider() {
    let w = world();
    let (sonnet, opus, gpt) = (
        key("anthropic/claude-sonnet-4-5"),
        key("anthropic/claude-opus-4-1"),
        key("openai/gpt-5"),
    );
    let e = w
        .ledger
        .record(&sonnet, &LedgerFailure::new(Reason::Quota))
        .unwrap();
    assert_eq!(e.key, key("anthropic"));
    let pick = w.ledger.pick(&[sonnet, opus, gpt.clone()]).unwrap();
    assert_eq!(pick.available, Some(gpt));
    assert_eq!(pick.blocked.len(), 2);
}

#[test]
fn when_nothing_is_available_the_earliest_is_named() {
    let w = world();
    let (a, b) = (key("anthropic/x"), key("openai/y"));
    w.ledger
        .record(&a, &wait(w.now() + 10 * MIN, Source::Header))
        .unwrap();
    w.ledger
        .record(&b, &wait(w.now() + 3 * MIN, Source::Tool))
        .unwrap();
    let pick = w.ledger.pick(&[a, b.clone()]).unwrap();
    assert_eq!(pick.available, None);
    assert_eq!(pick.earliest(), Some((&b, w.now() + 3 * MIN)));
    w.clock.advance(3 * MIN);
    assert_eq!(
        w.ledger.pick(std::slice::from_ref(&b)).unwrap().available,
        Some(b)
    );
}

#[test]
fn deadlines_only_lengthen() {
    let w = world();
    let m = key("openai/gpt-5");
    let long = w.now() + 10 * MIN;
    w.ledger.record(&m, &wait(long, Source::Header)).unwrap();
    // A later, shorter Retry-After (and a default) leave the longer one.
    let e = w
        .ledger
        .record(&m, &wait(w.now() + 2 * MIN, Source::Header))
        .unwrap();
    assert_eq!(e.until, long);
    assert_eq!(e.source, Source::Header);
    let e = w
        .ledger
        .record(&m, &LedgerFailure::new(Reason::Overloaded))
        .unwrap();
    assert_eq!(e.until, long);
    assert_eq!(e.reason, Reason::RateLimit);
    // A longer one extends it.
    let longer = w.now() + 14 * MIN;
    let e = w.ledger.record(&m, &wait(longer, Source::Tool)).unwrap();
    assert_eq!(e.until, longer);
    assert_eq!(e.source, Source::Tool);
}

#[test]
fn repeated_episodes_escalate_and_successes_decay_them() {
    let w = world();
    let m = key("anthropic/claude-sonnet-4-5");
    let mut lengths = Vec::new();
    for _ in 0..5 {
        let e = w
            .ledger
            .record(&m, &LedgerFailure::new(Reason::RateLimit))
            .unwrap();
        lengths.push(e.until.duration_since(w.now()).unwrap().as_secs());
        // Reported again during the same episode (another process saw the
        // same 429): no escalation.
        let again = w
            .ledger
            .record(&m, &LedgerFailure::new(Reason::RateLimit))
            .unwrap();
        assert_eq!(again.failures, e.failures);
        w.clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(lengths, [60, 120, 240, 480, 900]);
    w.ledger.succeeded(&m).unwrap();
    let failures = |w: &World| {
        w.ledger
            .list()
            .unwrap()
            .iter()
            .find(|(e, _)| e.key == m)
            .map(|(e, _)| e.failures)
    };
    assert_eq!(failures(&w), Some(2));
    let e = w
        .ledger
        .record(&m, &LedgerFailure::new(Reason::RateLimit))
        .unwrap();
    assert_eq!(e.failures, 3);
    assert_eq!(e.until.duration_since(w.now()).unwrap().as_secs(), 240);
    w.clock.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        w.ledger.succeeded(&m).unwrap();
    }
    assert_eq!(failures(&w), None, "fully recovered and over: forgotten");
}

#[test]
fn a_success_never_ends_a_live_cooldown() {
    let w = world();
    let m = key("openai/gpt-5");
    w.ledger
        .set(&m, Reason::Overloaded, w.now() + 10 * MIN, false)
        .unwrap();
    w.ledger.succeeded(&m).unwrap();
    assert_eq!(
        w.ledger.pick(std::slice::from_ref(&m)).unwrap().available,
        None
    );
}

#[test]
fn server_waits_are_cut_to_the_reasons_cap_and_past_ones_fall_back_to_defaults() {
    let w = world();
    let m = key("openai/gpt-5");
    for asked in [
        Duration::from_secs(90 * 86_400),
        Duration::from_secs(u64::MAX / 4),
        Duration::MAX,
    ] {
        let until = w
            .now()
            .checked_add(asked)
            .unwrap_or(backstop_core::time::latest());
        let e = w.ledger.record(&m, &wait(until, Source::Header)).unwrap();
        assert_eq!((e.until, e.source), (w.now() + 15 * MIN, Source::Header));
        w.ledger.clear(&m).unwrap();
    }
    let quota = LedgerFailure {
        reason: Reason::Quota,
        wait: Some((w.now() + Duration::from_secs(7 * 86_400), Source::Tool)),
        message: None,
    };
    let e = w.ledger.record(&m, &quota).unwrap();
    assert_eq!(e.until, w.now() + Duration::from_secs(86_400));
    let e = w
        .ledger
        .record(&m, &wait(w.now() - MIN, Source::Tool))
        .unwrap();
    assert_eq!((e.until, e.source), (w.now() + MIN, Source::Default));
}

#[test]
fn manual_cooldowns_are_bounded_to_a_year_and_nothing_is_written_beyond() {
    let w = world();
    let m = key("openai/gpt-5");
    let year = backstop_ledger::MAX_COOLDOWN;
    assert_eq!(year, Duration::from_secs(365 * 86_400));
    let Set::Written(e) = w
        .ledger
        .set(&m, Reason::Error, w.now() + year, false)
        .unwrap()
    else {
        panic!("written")
    };
    assert_eq!(e.until, w.now() + year);
    w.ledger.clear(&m).unwrap();
    for beyond in [year + Duration::from_millis(1), 10 * year] {
        match w.ledger.set(&m, Reason::Error, w.now() + beyond, true) {
            Err(backstop_ledger::Error::Invalid(msg)) => {
                assert!(msg.contains("more than 365 days away"), "{msg}")
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(w.ledger.list().unwrap().is_empty(), "nothing was written");
}

#[test]
fn a_manual_cooldown_without_a_length_takes_the_reasons_escalating_default() {
    let w = world();
    let m = key("openai/gpt-5");
    let mut lengths = Vec::new();
    for _ in 0..3 {
        let Set::Written(e) = w.ledger.set_default(&m, Reason::RateLimit, false).unwrap() else {
            panic!("written")
        };
        assert_eq!((e.source, e.reason), (Source::Manual, Reason::RateLimit));
        lengths.push(e.until.duration_since(w.now()).unwrap());
        // Set again while it runs: the same episode, not escalated.
        let Set::Written(again) = w.ledger.set_default(&m, Reason::RateLimit, false).unwrap()
        else {
            panic!("written")
        };
        assert_eq!((again.until, again.failures), (e.until, e.failures));
        w.clock.advance(lengths.last().copied().unwrap());
    }
    assert_eq!(lengths, [MIN, 2 * MIN, 4 * MIN]);
    // The key given is the key cooled, for the reason's own default.
    let Set::Written(e) = w
        .ledger
        .set_default(&key("anthropic"), Reason::Quota, false)
        .unwrap()
    else {
        panic!("written")
    };
    assert_eq!(e.until, w.now() + Duration::from_secs(3600));
}

#[test]
fn an_auth_cooldown_ends_when_the_credential_changes() {
    let w = world();
    w.logins.set("anthropic", "aaaaaaaaaaaa");
    let m = key("anthropic/claude-sonnet-4-5");
    let e = w
        .ledger
        .record(
            &m,
            &LedgerFailure {
                reason: Reason::Auth,
                wait: None,
                message: Some("Invalid API key · Please run /login".into()),
            },
        )
        .unwrap();
    assert_eq!(e.key, key("anthropic"));
    assert_eq!(e.fingerprint.as_deref(), Some("aaaaaaaaaaaa"));
    assert_eq!(e.until, w.now() + Duration::from_secs(3600));
    // A rate limit on another model of the same provider, recorded now.
    let other = key("anthropic/claude-opus-4-1");
    w.ledger
        .record(&other, &wait(w.now() + 20 * MIN, Source::Header))
        .unwrap();
    assert_eq!(
        w.ledger.pick(std::slice::from_ref(&m)).unwrap().available,
        None
    );

    w.logins.set("anthropic", "bbbbbbbbbbbb"); // logged in again
    assert_eq!(
        w.ledger.pick(std::slice::from_ref(&m)).unwrap().available,
        Some(m.clone())
    );
    // Only the auth entry follows the credential: the rate limit stands.
    assert_eq!(
        w.ledger
            .pick(std::slice::from_ref(&other))
            .unwrap()
            .available,
        None
    );
    let states: Vec<_> = w
        .ledger
        .list()
        .unwrap()
        .into_iter()
        .map(|(e, s)| (e.key.as_str().to_owned(), s))
        .collect();
    assert_eq!(
        states,
        [
            ("anthropic".to_owned(), State::CredentialChanged),
            ("anthropic/claude-opus-4-1".to_owned(), State::Cooling),
        ]
    );
}

#[test]
fn messages_are_stored_without_credentials() {
    let w = world();
    let m = key("openai/gpt-5");
    let e = w
        .ledger
        .record(
            &m,
            &LedgerFailure {
                reason: Reason::RateLimit,
                wait: None,
                message: Some(
                    "Rate limit reached for key sk-proj-ABCDEFGHIJKLMNOPQRSTUVWX\nretry later"
                        .into(),
                ),
            },
        )
        .unwrap();
    assert_eq!(
        e.last_error.as_deref(),
        Some("Rate limit reached for key <redacted> retry later")
    );
}

#[test]
fn manual_cooldowns_keep_a_longer_one_unless_replacing() {
    let w = world();
    let m = key("openai/gpt-5");
    let Set::Written(e) = w
        .ledger
        .set(&m, Reason::Quota, w.now() + 30 * MIN, false)
        .unwrap()
    else {
        panic!("written")
    };
    assert_eq!((e.key.clone(), e.source), (m.clone(), Source::Manual));
    assert!(matches!(
        w.ledger.set(&m, Reason::Error, w.now() + 5 * MIN, false).unwrap(),
        Set::KeptLonger(e) if e.until == w.now() + 30 * MIN
    ));
    assert!(matches!(
        w.ledger.set(&m, Reason::Error, w.now() + 5 * MIN, true).unwrap(),
        Set::Written(e) if e.until == w.now() + 5 * MIN && e.reason == Reason::Error
    ));
    let err = w
        .ledger
        .set(&m, Reason::Error, w.now() - MIN, true)
        .unwrap_err();
    assert!(err.to_string().contains("is in the past"), "{err}");
    // Refused: nothing changed.
    let (e, _) = &w.ledger.list().unwrap()[0];
    assert_eq!(e.until, w.now() + 5 * MIN);
}

#[test]
fn clearing_forgets() {
    let w = world();
    let m = key("openai/gpt-5");
    w.ledger
        .record(&m, &LedgerFailure::new(Reason::RateLimit))
        .unwrap();
    w.ledger
        .record(&m, &LedgerFailure::new(Reason::Auth))
        .unwrap();
    assert!(w.ledger.clear(&m).unwrap());
    assert!(!w.ledger.clear(&m).unwrap());
    assert_eq!(w.ledger.clear_all().unwrap(), 1);
    assert!(w.ledger.list().unwrap().is_empty());
}

#[test]
fn jitter_only_shortens_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    ));
    let ledger = Ledger::new(Box::new(
        SqliteStore::open(dir.path().join("l.db")).unwrap(),
    ))
    .with_clock(clock.clone())
    .with_seed(7);
    let mut lengths = std::collections::HashSet::new();
    for n in 0..20 {
        let e = ledger
            .record(
                &key(&format!("p/m{n}")),
                &LedgerFailure::new(Reason::RateLimit),
            )
            .unwrap();
        use backstop_core::clock::Clock;
        let d = e.until.duration_since(clock.now()).unwrap();
        assert!(d <= MIN && d >= MIN.mul_f64(0.8), "{d:?}");
        lengths.insert(d);
    }
    assert!(lengths.len() > 10, "spread, not lockstep");
}

#[test]
fn a_host_cools_until_its_wait_and_a_success_clears_only_what_it_waited_out() {
    let w = world();
    let host = Key::host("huggingface.co").unwrap();
    assert_eq!(w.ledger.until(&host).unwrap(), None);
    let first = w.now() + 55 * Duration::from_secs(1);
    w.ledger
        .record(&host, &wait(first, Source::Header))
        .unwrap();
    assert_eq!(w.ledger.until(&host).unwrap(), Some(first));
    let sonnet = key("anthropic/claude-sonnet-4-5");
    assert_eq!(
        w.ledger
            .pick(std::slice::from_ref(&sonnet))
            .unwrap()
            .available,
        Some(sonnet),
        "a host holds no model"
    );

    w.clock.advance(MIN);
    assert_eq!(
        w.ledger.until(&host).unwrap(),
        Some(first),
        "an entry that is over is still read, to be cleared"
    );
    let seen = first;
    // Another process is refused again before this one's success lands.
    let second = w.now() + 30 * Duration::from_secs(1);
    w.ledger
        .record(&host, &wait(second, Source::Header))
        .unwrap();
    assert!(!w.ledger.clear_if_over(&host, seen).unwrap());
    assert_eq!(w.ledger.until(&host).unwrap(), Some(second));

    w.clock.advance(MIN);
    assert!(w.ledger.clear_if_over(&host, second).unwrap());
    assert_eq!(w.ledger.until(&host).unwrap(), None);
    assert!(!w.ledger.clear_if_over(&host, second).unwrap());
}

#[test]
fn a_hosts_wait_is_held_to_the_reasons_cap() {
    let w = world();
    let host = Key::host("127.0.0.1:8080").unwrap();
    let entry = w
        .ledger
        .record(&host, &wait(w.now() + 24 * 60 * MIN, Source::Header))
        .unwrap();
    assert_eq!(entry.until, w.now() + 15 * MIN);
    let quota = LedgerFailure {
        reason: Reason::Quota,
        wait: Some((w.now() + 60 * MIN, Source::Body)),
        message: Some("insufficient_quota".into()),
    };
    let entry = w.ledger.record(&host, &quota).unwrap();
    assert_eq!(entry.key, host, "a host is its own provider");
    assert_eq!(entry.until, w.now() + 60 * MIN);
}
