//! Invariants of the engine over random policies and failure scripts.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use backstop_core::{Class, Classified, Jitter, Policy, Verdict};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

#[derive(Debug, Clone)]
struct Fail(Class);
impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
impl Classified for Fail {
    fn verdict(&self) -> Verdict {
        Verdict::new(self.0, "scripted")
    }
}

fn paused<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime")
        .block_on(fut)
}

fn wait() -> impl Strategy<Value = Option<Duration>> {
    prop::option::of((0u64..200_000).prop_map(Duration::from_millis))
}

fn class() -> impl Strategy<Value = Class> {
    prop_oneof![
        6 => Just(Class::Transient),
        3 => wait().prop_map(|wait| Class::RateLimited { wait }),
        2 => wait().prop_map(|wait| Class::Overloaded { wait }),
        1 => Just(Class::Permanent),
        1 => Just(Class::Auth),
        1 => wait().prop_map(|reset| Class::QuotaExhausted { reset }),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        1u32..15,
        0u64..5_000,
        0u64..60_000,
        1.0f64..4.0,
        prop_oneof![
            Just(Jitter::Full),
            Just(Jitter::Decorrelated),
            Just(Jitter::None)
        ],
        0u64..120_000,
        any::<u64>(),
    )
        .prop_map(|(attempts, initial, cap, mult, jitter, server, seed)| {
            Policy::api()
                .with_max_attempts(attempts)
                .with_initial_delay(Duration::from_millis(initial))
                .with_max_delay(Duration::from_millis(cap))
                .with_multiplier(mult)
                .with_jitter(jitter)
                .with_attempt_timeout(None)
                .with_max_server_wait(Duration::from_millis(server))
                .with_seed(seed)
        })
}

/// Runs `policy` over `script` (the last outcome repeats); returns the
/// number of calls, the retry events and the gaps between attempt starts.
fn run(policy: &Policy, script: &[Class]) -> (u32, Vec<(Class, Duration, bool)>, Vec<Duration>) {
    paused(async {
        let starts = Rc::new(RefCell::new(Vec::new()));
        let events = Rc::new(RefCell::new(Vec::new()));
        let origin = tokio::time::Instant::now();
        let (s, e) = (Rc::clone(&starts), Rc::clone(&events));
        let result = policy
            .retry(|attempt| {
                s.borrow_mut().push(origin.elapsed());
                let class = script[(attempt.number as usize - 1).min(script.len() - 1)];
                async move { Err::<(), _>(Fail(class)) }
            })
            .notify(move |ev| e.borrow_mut().push((ev.class, ev.delay, ev.server_wait)))
            .run()
            .await;
        let err = result.expect_err("every attempt fails");
        let starts = starts.borrow();
        assert_eq!(err.attempts as usize, starts.len());
        let gaps = starts.windows(2).map(|w| w[1] - w[0]).collect();
        (err.attempts, events.borrow().clone(), gaps)
    })
}

/// Runs `property` on 256 generated cases, the way `proptest!` would, and
/// returns normally only if every case holds.
fn check<S: Strategy>(strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let mut runner = TestRunner::new(ProptestConfig::with_cases(256));
    if let Err(failure) = runner.run(&strategy, property) {
        panic!("{failure}");
    }
}

fn script() -> impl Strategy<Value = Vec<Class>> {
    prop::collection::vec(class(), 1..20)
}

#[test]
fn attempts_never_exceed_the_maximum() {
    // A property that every run stopping at its first attempt would pass
    // proves nothing: count the runs that retried and those that used up
    // every attempt.
    let (retried, exhausted) = (Cell::new(0u32), Cell::new(0u32));
    check((policy(), script()), |(policy, script)| {
        let (attempts, events, _) = run(&policy, &script);
        prop_assert!(attempts >= 1);
        prop_assert!(attempts <= policy.max_attempts());
        prop_assert_eq!(events.len() as u32, attempts - 1);
        retried.set(retried.get() + u32::from(attempts > 1));
        exhausted.set(exhausted.get() + u32::from(attempts == policy.max_attempts()));
        Ok(())
    });
    assert!(retried.get() > 0, "no generated run retried");
    assert!(exhausted.get() > 0, "no generated run used every attempt");
}

#[test]
fn no_sleep_exceeds_the_cap_or_the_honoured_server_wait() {
    // Count the sleeps of each kind checked, so that neither branch of the
    // property holds only because no case reached it.
    let (backoffs, server_waits) = (Cell::new(0u32), Cell::new(0u32));
    check((policy(), script()), |(policy, script)| {
        let (_, events, gaps) = run(&policy, &script);
        prop_assert_eq!(events.len(), gaps.len());
        for ((class, delay, from_server), gap) in events.iter().zip(&gaps) {
            if *from_server {
                let wait = class.server_wait().expect("a server wait");
                prop_assert_eq!(*delay, wait, "the server's wait, exactly");
                prop_assert!(wait <= policy.max_server_wait());
                server_waits.set(server_waits.get() + 1);
            } else {
                prop_assert!(*delay <= policy.max_delay());
                backoffs.set(backoffs.get() + 1);
            }
            // The engine really slept that long: never less (never retry
            // before the server allows), and no more than the timer's
            // millisecond rounding beyond it. Sub-millisecond waits skip
            // the timer altogether.
            if *delay < Duration::from_millis(1) {
                prop_assert_eq!(*gap, Duration::ZERO);
            } else {
                prop_assert!(*gap >= *delay, "slept {gap:?} < {delay:?}");
                prop_assert!(
                    *gap < *delay + Duration::from_millis(1),
                    "slept {gap:?} > {delay:?}"
                );
            }
        }
        Ok(())
    });
    assert!(backoffs.get() > 0, "no generated run slept its own backoff");
    assert!(
        server_waits.get() > 0,
        "no generated run honoured a server's wait"
    );
}

#[test]
fn retry_time_does_not_depend_on_payload_size() {
    check(
        (any::<u64>(), any::<u64>(), any::<u64>()),
        |(a, b, seed)| {
            let pa = Policy::transfer(a)
                .with_seed(seed)
                .with_attempt_timeout(None);
            let pb = Policy::transfer(b)
                .with_seed(seed)
                .with_attempt_timeout(None);
            prop_assert_eq!(pa.max_total_backoff(), pb.max_total_backoff());
            let script = [Class::Transient];
            let (_, _, gaps_a) = run(&pa, &script);
            let (_, _, gaps_b) = run(&pb, &script);
            // Equal because both retried, not because neither did.
            prop_assert!(!gaps_a.is_empty(), "a transient failure is retried");
            prop_assert_eq!(&gaps_a, &gaps_b);
            let total: Duration = gaps_a.iter().sum();
            // Each sleep may round up to the timer's next millisecond.
            let rounding = Duration::from_millis(u64::from(pa.max_attempts()));
            prop_assert!(total <= pa.max_total_backoff() + rounding);
            Ok(())
        },
    );
}
