//! The engine's behaviour on tokio's paused clock: exact schedules, server
//! waits, deadlines, cancellation, hooks and the budget.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use backstop_core::{
    Attempt, AttemptError, Class, Classified, Ending, Jitter, Policy, RetryBudget, Verdict,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, PartialEq)]
struct Fail(Class);

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed with {:?}", self.0)
    }
}
impl std::error::Error for Fail {}
impl Classified for Fail {
    fn verdict(&self) -> Verdict {
        Verdict::new(self.0, format!("{:?}", self.0))
    }
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An operation that plays a script of outcomes, one per attempt (the last
/// repeats), and records when each attempt started.
#[derive(Clone)]
struct Script {
    outcomes: Vec<Result<u32, Class>>,
    /// How long each attempt takes before answering.
    busy: Duration,
    starts: Rc<RefCell<Vec<Duration>>>,
    attempts: Rc<RefCell<Vec<Attempt>>>,
    origin: Instant,
}

impl Script {
    fn new(outcomes: Vec<Result<u32, Class>>) -> Self {
        Script {
            outcomes,
            busy: Duration::ZERO,
            starts: Rc::default(),
            attempts: Rc::default(),
            origin: Instant::now(),
        }
    }
    fn busy(mut self, busy: Duration) -> Self {
        self.busy = busy;
        self
    }
    fn op(
        &self,
    ) -> impl FnMut(Attempt) -> std::pin::Pin<Box<dyn Future<Output = Result<u32, Fail>>>> {
        let this = self.clone();
        move |attempt: Attempt| {
            let this = this.clone();
            Box::pin(async move {
                let n = this.starts.borrow().len();
                this.starts.borrow_mut().push(this.origin.elapsed());
                this.attempts.borrow_mut().push(attempt);
                if !this.busy.is_zero() {
                    tokio::time::sleep(this.busy).await;
                }
                let outcome = this.outcomes[n.min(this.outcomes.len() - 1)];
                outcome.map_err(Fail)
            })
        }
    }
    fn starts(&self) -> Vec<Duration> {
        self.starts.borrow().clone()
    }
}

fn exact() -> Policy {
    Policy::api()
        .with_jitter(Jitter::None)
        .with_attempt_timeout(None)
}

#[tokio::test(start_paused = true)]
async fn exact_schedule_without_jitter() {
    let script = Script::new(vec![Err(Class::Transient)]);
    let err = exact().retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::Exhausted);
    assert_eq!(err.attempts, 5);
    assert_eq!(
        script.starts(),
        [secs(0), secs(1), secs(3), secs(7), secs(15)]
    );
    assert_eq!(err.waited, secs(15));
    assert_eq!(err.elapsed, secs(15));
    assert_eq!(err.last_error(), Some(&Fail(Class::Transient)));
    assert_eq!(err.reason.as_deref(), Some("Transient"));
}

#[tokio::test(start_paused = true)]
async fn success_after_failures_returns_the_value() {
    let script = Script::new(vec![Err(Class::Transient), Err(Class::Transient), Ok(7)]);
    let got = exact().retry(script.op()).run().await.unwrap();
    assert_eq!(got, 7);
    assert_eq!(script.starts(), [secs(0), secs(1), secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn the_cap_bounds_every_wait() {
    let policy = exact()
        .with_max_attempts(8)
        .with_max_delay(secs(5))
        .with_initial_delay(secs(2));
    let script = Script::new(vec![Err(Class::Transient)]);
    policy.retry(script.op()).run().await.unwrap_err();
    // Waits 2, 4, then 5 at the cap.
    assert_eq!(
        script.starts(),
        [0, 2, 6, 11, 16, 21, 26, 31].map(secs).to_vec()
    );
}

#[tokio::test(start_paused = true)]
async fn full_jitter_schedule_is_seeded_and_bounded() {
    let run = |seed| async move {
        let script = Script::new(vec![Err(Class::Transient)]);
        let policy = Policy::api().with_attempt_timeout(None).with_seed(seed);
        policy.retry(script.op()).run().await.unwrap_err();
        let starts = script.starts();
        starts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
    };
    let a = run(42).await;
    assert_eq!(a, run(42).await, "same seed, same schedule");
    assert_ne!(a, run(43).await, "different seeds disagree");
    for (n, wait) in a.iter().enumerate() {
        let ceiling = Policy::api().ceiling(n as u32 + 1);
        assert!(*wait <= ceiling, "wait {n} = {wait:?} > {ceiling:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn server_wait_replaces_the_computed_delay() {
    let script = Script::new(vec![
        Err(Class::RateLimited {
            wait: Some(secs(7)),
        }),
        Err(Class::Overloaded {
            wait: Some(secs(45)),
        }),
        Ok(1),
    ]);
    let events = Rc::new(RefCell::new(Vec::new()));
    let log = Rc::clone(&events);
    let got = exact()
        .retry(script.op())
        .notify(move |e| {
            log.borrow_mut()
                .push((e.attempt, e.reason.to_string(), e.delay, e.server_wait))
        })
        .run()
        .await
        .unwrap();
    assert_eq!(got, 1);
    // 45 s is beyond the 30 s cap of computed delays but within the 60 s of
    // honoured server waits: slept exactly, never less.
    assert_eq!(script.starts(), [secs(0), secs(7), secs(52)]);
    let events = events.borrow();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].0, 1);
    assert_eq!(events[0].2, secs(7));
    assert!(events[0].3);
    assert!(events[0].1.contains("RateLimited"));
    assert_eq!(events[1].2, secs(45));
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_beyond_the_policy_ends_at_once() {
    let script = Script::new(vec![Err(Class::RateLimited {
        wait: Some(secs(3600)),
    })]);
    let started = Instant::now();
    let err = exact().retry(script.op()).run().await.unwrap_err();
    assert_eq!(
        err.ending,
        Ending::RateLimited {
            wait: Some(secs(3600))
        }
    );
    assert_eq!(err.attempts, 1);
    assert_eq!(err.waited, Duration::ZERO);
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "never sleeps for an hour"
    );
    assert_eq!(err.ending.server_wait(), Some(secs(3600)));
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_a_week_ends_at_once_whatever_the_policy_allows() {
    for wait in [secs(8 * 86_400), secs(99_999_999_999_999), Duration::MAX] {
        let script = Script::new(vec![Err(Class::RateLimited { wait: Some(wait) })]);
        let started = Instant::now();
        let policy = exact().with_max_server_wait(Duration::MAX);
        assert_eq!(policy.max_server_wait(), backstop_core::wait::MAX_SIGNAL);
        let err = policy.retry(script.op()).run().await.unwrap_err();
        assert_eq!(err.ending, Ending::RateLimited { wait: Some(wait) });
        assert_eq!((err.attempts, started.elapsed()), (1, Duration::ZERO));
        assert!(err.to_string().contains("the server asks to wait"), "{err}");
    }
}

#[tokio::test(start_paused = true)]
async fn persistent_rate_limit_is_typed() {
    let script = Script::new(vec![Err(Class::RateLimited { wait: None })]);
    let err = exact().retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::RateLimited { wait: None });
    assert_eq!(err.attempts, 5);
    assert!(err.ending.is_temporary());
}

#[tokio::test(start_paused = true)]
async fn persistent_overload_is_typed() {
    let script = Script::new(vec![Err(Class::Overloaded { wait: None })]);
    let err = exact().retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::Overloaded { wait: None });
    assert_eq!(err.attempts, 5);
}

#[tokio::test(start_paused = true)]
async fn final_failures_end_at_once() {
    let cases = [
        (Class::Permanent, Ending::Permanent),
        (Class::Auth, Ending::Auth),
        (
            Class::QuotaExhausted {
                reset: Some(secs(86_400)),
            },
            Ending::QuotaExhausted {
                reset: Some(secs(86_400)),
            },
        ),
    ];
    for (class, ending) in cases {
        let script = Script::new(vec![Err(Class::Transient), Err(class), Ok(1)]);
        let err = exact().retry(script.op()).run().await.unwrap_err();
        assert_eq!(err.ending, ending);
        assert_eq!(err.attempts, 2, "{class:?}");
        assert_eq!(err.last_error(), Some(&Fail(class)));
    }
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_transient_and_retried() {
    let script = Script::new(vec![Ok(5)]).busy(secs(10));
    let policy = exact().with_attempt_timeout(secs(4)).with_max_attempts(3);
    let err = policy.retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::Exhausted);
    assert_eq!(err.attempts, 3);
    assert_eq!(err.reason.as_deref(), Some("attempt timeout"));
    assert!(matches!(
        err.last,
        Some(AttemptError::TimedOut { after }) if after == secs(4)
    ));
    // 4 s attempt, 1 s wait, 4 s attempt, 2 s wait, 4 s attempt.
    assert_eq!(script.starts(), [secs(0), secs(5), secs(11)]);
    assert_eq!(err.elapsed, secs(15));
    let told: Vec<_> = script.attempts.borrow().iter().map(|a| a.timeout).collect();
    assert_eq!(told, [Some(secs(4)); 3]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_time_inside_attempts() {
    // Each attempt fails after 4 s; waits are 1, 2, 4...; deadline 10 s.
    let script = Script::new(vec![Err(Class::Transient)]).busy(secs(4));
    let policy = exact().with_deadline(secs(10)).with_max_attempts(10);
    let started = Instant::now();
    let err = policy.retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::DeadlineExceeded);
    // Attempts at 0 (ends 4), wait 1 → 5 (ends 9); a 2 s wait would end
    // at 11, past the deadline, so the engine stops at 9 instead of sleeping.
    assert_eq!(script.starts(), [secs(0), secs(5)]);
    assert_eq!(started.elapsed(), secs(9));
    assert_eq!(err.last_error(), Some(&Fail(Class::Transient)));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_running_attempt() {
    let script = Script::new(vec![Err(Class::Transient), Ok(1)]).busy(secs(6));
    let policy = exact().with_deadline(secs(10)).with_max_attempts(10);
    let started = Instant::now();
    let err = policy.retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::DeadlineExceeded);
    // Attempt 1 runs 0–6, waits 1, attempt 2 is given the 3 s left.
    assert_eq!(started.elapsed(), secs(10));
    let told: Vec<_> = script.attempts.borrow().iter().map(|a| a.timeout).collect();
    assert_eq!(told, [Some(secs(10)), Some(secs(3))]);
    // The last real error is kept, not replaced by the cut.
    assert_eq!(err.last_error(), Some(&Fail(Class::Transient)));
}

#[tokio::test(start_paused = true)]
async fn a_server_wait_past_the_deadline_ends_as_rate_limited() {
    let script = Script::new(vec![Err(Class::RateLimited {
        wait: Some(secs(20)),
    })]);
    let err = exact()
        .with_deadline(secs(10))
        .retry(script.op())
        .run()
        .await
        .unwrap_err();
    assert_eq!(
        err.ending,
        Ending::RateLimited {
            wait: Some(secs(20))
        }
    );
    assert_eq!(err.attempts, 1);
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_sleep_stops_at_once_and_keeps_the_last_error() {
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        canceller.cancel();
    });
    let script = Script::new(vec![Err(Class::Transient)]);
    let started = Instant::now();
    let err = exact()
        .retry(script.op())
        .cancel_on(&token)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.ending, Ending::Cancelled);
    // Attempts at 0 and 1; cancelled 0.5 s into the 2 s wait.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    assert_eq!(err.attempts, 2);
    assert_eq!(err.waited, Duration::from_millis(1500));
    assert_eq!(err.last_error(), Some(&Fail(Class::Transient)));
}

#[tokio::test(start_paused = true)]
async fn cancellation_mid_attempt_stops_at_once() {
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(2)).await;
        canceller.cancel();
    });
    let script = Script::new(vec![Ok(1)]).busy(secs(60));
    let started = Instant::now();
    let err = exact()
        .retry(script.op())
        .cancel_on(&token)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.ending, Ending::Cancelled);
    assert_eq!(started.elapsed(), secs(2));
    assert!(err.last.is_none());
}

/// `cancel_waits_on`: the attempt under way winds down by itself; the
/// engine neither drops it nor starts another.
#[tokio::test(start_paused = true)]
async fn graceful_cancellation_lets_the_attempt_finish_and_keeps_its_error() {
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(2)).await;
        canceller.cancel();
    });
    let script = Script::new(vec![Err(Class::Transient), Ok(1)]).busy(secs(10));
    let started = Instant::now();
    let err = exact()
        .retry(script.op())
        .cancel_waits_on(&token)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.ending, Ending::Cancelled);
    assert_eq!(started.elapsed(), secs(10), "the attempt ran to its end");
    assert_eq!(err.attempts, 1, "no attempt after the cancellation");
    assert_eq!(err.last_error(), Some(&Fail(Class::Transient)));
}

#[tokio::test(start_paused = true)]
async fn graceful_cancellation_cuts_the_wait_and_keeps_a_late_success() {
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        canceller.cancel();
    });
    let script = Script::new(vec![Err(Class::Transient)]);
    let started = Instant::now();
    let err = exact()
        .retry(script.op())
        .cancel_waits_on(&token)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.ending, Ending::Cancelled);
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
    assert_eq!(err.attempts, 2);

    // An attempt that succeeds although the token fired while it ran is a
    // success: its work is done.
    let token = CancellationToken::new();
    let canceller = token.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(1)).await;
        canceller.cancel();
    });
    let script = Script::new(vec![Ok(7)]).busy(secs(3));
    let got = exact()
        .retry(script.op())
        .cancel_waits_on(&token)
        .run()
        .await;
    assert_eq!(got.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn an_already_cancelled_token_starts_nothing() {
    let token = CancellationToken::new();
    token.cancel();
    let script = Script::new(vec![Ok(1)]);
    let err = exact()
        .retry(script.op())
        .cancel_on(&token)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.ending, Ending::Cancelled);
    assert_eq!(err.attempts, 0);
    assert!(script.starts().is_empty());
}

#[tokio::test(start_paused = true)]
async fn dropping_the_future_stops_the_loop() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = Arc::clone(&calls);
    let handle = tokio::spawn(async move {
        let policy = Policy::api()
            .with_jitter(Jitter::None)
            .with_max_attempts(100);
        policy
            .retry(|_| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Err::<(), _>(Fail(Class::Transient)) }
            })
            .run()
            .await
    });
    tokio::time::sleep(Duration::from_millis(3500)).await;
    handle.abort();
    let _ = handle.await;
    let seen = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(seen, 3, "attempts at 0, 1 and 3 s");
    tokio::time::sleep(secs(3600)).await;
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), seen);
}

#[tokio::test(start_paused = true)]
async fn a_shared_budget_stops_retries() {
    let budget = Arc::new(RetryBudget::new(4, 0.5));
    let script = Script::new(vec![Err(Class::Transient)]);
    let policy = exact().with_max_attempts(10);
    let err = policy
        .retry(script.op())
        .budget(&budget)
        .run()
        .await
        .unwrap_err();
    // 4 tokens: after two failures 2 remain, not more than half.
    assert_eq!(err.ending, Ending::BudgetExhausted);
    assert_eq!(err.attempts, 2);
    // A second call gets its first attempt but no retry.
    let script = Script::new(vec![Err(Class::Transient)]);
    let err = policy
        .retry(script.op())
        .budget(&budget)
        .run()
        .await
        .unwrap_err();
    assert_eq!(err.ending, Ending::BudgetExhausted);
    assert_eq!(err.attempts, 1);
    // Successes refill it.
    for _ in 0..4 {
        let ok = Script::new(vec![Ok(1)]);
        policy.retry(ok.op()).budget(&budget).run().await.unwrap();
    }
    assert!(budget.allows_retry());
}

#[tokio::test(start_paused = true)]
async fn custom_classifiers_override_the_error_type() {
    let script = Script::new(vec![Err(Class::Permanent), Ok(3)]);
    let got = exact()
        .retry(script.op())
        .classify(|_| Verdict::transient("treated as transient"))
        .run()
        .await
        .unwrap();
    assert_eq!(got, 3);
}

#[test]
fn zero_delays_never_touch_the_timer() {
    // Outside any tokio runtime a timer would panic; polling once with a
    // no-op waker proves the whole loop runs without one.
    let policy = Policy::api()
        .with_attempt_timeout(None)
        .with_initial_delay(Duration::ZERO)
        .with_max_attempts(4);
    let mut calls = 0;
    let fut = policy
        .retry(|_| {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(Fail(Class::Transient))
                } else {
                    Ok(n)
                }
            }
        })
        .run();
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(n)) => assert_eq!(n, 4),
        other => panic!("expected an immediate success, got {:?}", other.is_ready()),
    }
}

#[test]
fn sub_millisecond_server_waits_skip_the_timer_too() {
    let policy = exact().with_max_attempts(3);
    let mut calls = 0;
    let fut = policy
        .retry(|_| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Fail(Class::RateLimited {
                        wait: Some(Duration::from_micros(200)),
                    }))
                } else {
                    Ok(n)
                }
            }
        })
        .run();
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(matches!(
        fut.as_mut().poll(&mut cx),
        std::task::Poll::Ready(Ok(3))
    ));
}

#[tokio::test(start_paused = true)]
async fn enormous_settings_do_not_overflow() {
    let policy = Policy::api()
        .with_jitter(Jitter::None)
        .with_initial_delay(Duration::MAX)
        .with_max_delay(Duration::MAX)
        .with_multiplier(1e300)
        .with_deadline(Duration::from_secs(10))
        .with_max_attempts(u32::MAX);
    let script = Script::new(vec![Err(Class::Transient)]);
    let err = policy.retry(script.op()).run().await.unwrap_err();
    assert_eq!(err.ending, Ending::DeadlineExceeded);
    assert_eq!(err.attempts, 1);
    let policy = Policy::api()
        .with_deadline(Duration::MAX)
        .with_attempt_timeout(Duration::MAX);
    let script = Script::new(vec![Err(Class::Transient), Ok(2)]);
    assert_eq!(
        policy.with_seed(1).retry(script.op()).run().await.unwrap(),
        2
    );
}

/// The owned form borrows nothing: built in a function from values that
/// go out of scope, spawned, and still drawing on the budget and obeying
/// the token it was given.
#[tokio::test(start_paused = true)]
async fn an_owned_call_is_spawned_with_its_budget_and_token() {
    fn owned(
        budget: &Arc<RetryBudget>,
        token: &CancellationToken,
    ) -> impl Future<Output = Result<u32, backstop_core::RetryError<Fail>>> + Send + 'static {
        let policy = exact();
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        policy
            .into_retry(move |_| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        Err(Fail(Class::Transient))
                    } else {
                        Ok(n)
                    }
                }
            })
            .budget(budget)
            .cancel_on(token)
            .run()
    }
    let token = CancellationToken::new();
    let plenty = Arc::new(RetryBudget::default());
    let answer = tokio::spawn(owned(&plenty, &token)).await.expect("joins");
    assert_eq!(answer.ok(), Some(1));

    // Two tokens: the first failure leaves half, and no retry is allowed.
    let scarce = Arc::new(RetryBudget::new(2, 0.001));
    let err = tokio::spawn(owned(&scarce, &token))
        .await
        .expect("joins")
        .unwrap_err();
    assert_eq!(err.ending, Ending::BudgetExhausted);
    assert_eq!(err.attempts, 1);

    token.cancel();
    let err = tokio::spawn(owned(&plenty, &token))
        .await
        .expect("joins")
        .unwrap_err();
    assert_eq!(err.ending, Ending::Cancelled);
    assert_eq!(err.attempts, 0);
}
