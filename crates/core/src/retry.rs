//! The retry engine: runs an operation under a [`Policy`] until it
//! succeeds, fails for good, runs out of attempts or time, or is cancelled.

use std::borrow::{Borrow, Cow};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::policy::Backoff;
use crate::{
    AttemptError, ByType, Class, Classify, Ending, HumanDuration, Policy, RetryBudget, RetryError,
    Verdict,
};

/// Waits shorter than this skip the timer: a zero-length tokio sleep still
/// costs about a millisecond.
const TIMER_THRESHOLD: Duration = Duration::from_millis(1);

/// What the operation is told about the attempt it is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 1 for the first attempt.
    pub number: u32,
    /// How long this attempt may run before the engine drops it, if limited.
    pub timeout: Option<Duration>,
}

/// Passed to the notify hook before each wait.
#[derive(Clone, Copy, Debug)]
pub struct RetryEvent<'a> {
    /// The attempt that just failed (1-based).
    pub attempt: u32,
    /// The policy's maximum number of attempts.
    pub max_attempts: u32,
    /// How the failure was classified.
    pub class: Class,
    /// A short reason: "HTTP 503", "connection reset", "attempt timeout".
    pub reason: &'a str,
    /// How long the engine is about to wait.
    pub delay: Duration,
    /// Whether `delay` is the server's own requested wait.
    pub server_wait: bool,
}

/// A hook told about every retry before the engine sleeps. Implemented for
/// `()` (no hook) and for every `FnMut(&RetryEvent)`.
pub trait Notify {
    /// Called once per retry, before the wait.
    fn notify(&mut self, event: &RetryEvent<'_>);
}

impl Notify for () {
    fn notify(&mut self, _: &RetryEvent<'_>) {}
}

impl<F: FnMut(&RetryEvent<'_>)> Notify for F {
    fn notify(&mut self, event: &RetryEvent<'_>) {
        self(event)
    }
}

/// A call to retry, configured with a builder and started with
/// [`Retry::run`].
///
/// The error type `E` of the operation is part of the builder's type, so
/// the closures given to [`classify`](Retry::classify) and
/// [`notify`](Retry::notify) need no annotations. `P` is how the policy is
/// held: borrowed by [`Policy::retry`], owned by [`Policy::into_retry`]
/// (a future that can be returned from a function or spawned).
///
/// ```
/// use std::io;
/// use backstop_core::{Ending, Policy, Verdict, classify_io_kind};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let policy = Policy::api();
/// let mut failures = 2;
/// let answer = policy
///     .retry(|_attempt| {
///         let fail = failures > 0;
///         failures -= 1;
///         async move {
///             if fail {
///                 Err(io::Error::from(io::ErrorKind::ConnectionReset))
///             } else {
///                 Ok(42)
///             }
///         }
///     })
///     .classify(|e| classify_io_kind(e.kind()))
///     .notify(|e| eprintln!("{}; retrying", e.reason))
///     .run()
///     .await;
/// assert_eq!(answer.unwrap(), 42);
///
/// let err = policy
///     .retry(|_| async { Err::<(), _>(io::Error::from(io::ErrorKind::NotFound)) })
///     .run()
///     .await
///     .unwrap_err();
/// assert_eq!(err.ending, Ending::Permanent);
/// assert_eq!(err.attempts, 1);
/// # }
/// ```
#[must_use = "a Retry does nothing until `.run().await`"]
pub struct Retry<P, Op, E, C = ByType, N = (), G = Unguarded> {
    policy: P,
    op: Op,
    classifier: C,
    notify: N,
    /// The shared budget and the cancellation token, when either is
    /// given: a type of its own, so that a call without them carries no
    /// field, flag or drop code for them.
    guards: G,
    /// The operation's error type, fixed by [`Policy::retry`] so that
    /// closures given to the builder infer their argument.
    error: PhantomData<fn() -> E>,
}

/// What bounds a call beyond its policy: a retry budget shared with other
/// calls, and the caller's cancellation. Implemented by [`Unguarded`] (a
/// call given neither) and [`Guards`].
pub trait Guard: guard::Sealed {
    /// The shared retry budget, if any.
    fn budget(&self) -> Option<&RetryBudget>;
    /// The cancellation token, if any.
    fn cancel(&self) -> Option<&CancellationToken>;
    /// Whether the token leaves a running attempt alone (it only cuts
    /// waits and stops new attempts).
    fn graceful(&self) -> bool;
    /// The same guards, as the type that can hold a budget and a token.
    fn into_guards(self) -> Guards;
}

mod guard {
    pub trait Sealed {}
    impl Sealed for super::Unguarded {}
    impl Sealed for super::Guards {}
}

/// A call given neither a budget nor a cancellation token.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unguarded;

/// A call's budget and cancellation token, set by [`Retry::budget`],
/// [`Retry::cancel_on`] and [`Retry::cancel_waits_on`].
#[derive(Clone, Debug, Default)]
pub struct Guards {
    budget: Option<Arc<RetryBudget>>,
    cancel: Option<CancellationToken>,
    graceful: bool,
}

impl Guard for Unguarded {
    fn budget(&self) -> Option<&RetryBudget> {
        None
    }
    fn cancel(&self) -> Option<&CancellationToken> {
        None
    }
    fn graceful(&self) -> bool {
        false
    }
    fn into_guards(self) -> Guards {
        Guards::default()
    }
}

impl Guard for Guards {
    fn budget(&self) -> Option<&RetryBudget> {
        self.budget.as_deref()
    }
    fn cancel(&self) -> Option<&CancellationToken> {
        self.cancel.as_ref()
    }
    fn graceful(&self) -> bool {
        self.graceful
    }
    fn into_guards(self) -> Guards {
        self
    }
}

impl Policy {
    /// Starts configuring a retried call of `op` under this policy,
    /// borrowed for as long as the call runs.
    pub fn retry<Op, Fut, T, E>(&self, op: Op) -> Retry<&Policy, Op, E>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Retry::new(self, op)
    }

    /// Like [`Policy::retry`], but the call owns its policy: its future
    /// borrows nothing, so it can be returned from a function or handed to
    /// `tokio::spawn`.
    ///
    /// ```
    /// use std::io;
    /// use backstop_core::{Policy, RetryError};
    ///
    /// fn fetch() -> impl Future<Output = Result<u32, RetryError<io::Error>>> + Send + 'static {
    ///     Policy::api().into_retry(|_| async { Ok(7) }).run()
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// assert_eq!(tokio::spawn(fetch()).await.unwrap().unwrap(), 7);
    /// # }
    /// ```
    pub fn into_retry<Op, Fut, T, E>(self, op: Op) -> Retry<Policy, Op, E>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Retry::new(self, op)
    }
}

impl<P: Borrow<Policy>, Op, E> Retry<P, Op, E> {
    fn new(policy: P, op: Op) -> Self {
        Retry {
            policy,
            op,
            classifier: ByType,
            notify: (),
            guards: Unguarded,
            error: PhantomData,
        }
    }
}

impl<P: Borrow<Policy>, Op, E, C, N, G: Guard> Retry<P, Op, E, C, N, G> {
    /// Classifies failures with `classifier` instead of asking the error
    /// type ([`ByType`]).
    pub fn classify<F>(self, classifier: F) -> Retry<P, Op, E, F, N, G>
    where
        F: Fn(&E) -> Verdict,
    {
        Retry {
            policy: self.policy,
            op: self.op,
            classifier,
            notify: self.notify,
            guards: self.guards,
            error: PhantomData,
        }
    }

    /// Calls `notify` before each wait.
    pub fn notify<F>(self, notify: F) -> Retry<P, Op, E, C, F, G>
    where
        F: FnMut(&RetryEvent<'_>),
    {
        Retry {
            policy: self.policy,
            op: self.op,
            classifier: self.classifier,
            notify,
            guards: self.guards,
            error: PhantomData,
        }
    }

    /// Draws retries from a budget shared with other calls (the call keeps
    /// its own handle on it). `None` leaves the call without one.
    pub fn budget<'b>(
        self,
        budget: impl Into<Option<&'b Arc<RetryBudget>>>,
    ) -> Retry<P, Op, E, C, N, Guards> {
        let budget = budget.into().map(Arc::clone);
        self.guard(|g| g.budget = budget)
    }

    /// Stops at once, mid-attempt or mid-wait, when `token` is cancelled.
    /// Dropping the future returned by [`Retry::run`] stops it too. `None`
    /// leaves the call without a token.
    pub fn cancel_on<'t>(
        self,
        token: impl Into<Option<&'t CancellationToken>>,
    ) -> Retry<P, Op, E, C, N, Guards> {
        let token = token.into().cloned();
        self.guard(|g| {
            g.cancel = token;
            g.graceful = false;
        })
    }

    /// Stops when `token` is cancelled, but lets a running attempt finish
    /// on its own terms: the wait between attempts is cut at once and no
    /// new attempt starts, while an attempt under way is never dropped —
    /// for operations that wind down themselves when the token fires (a
    /// child process sent SIGINT and given time to exit). An attempt that
    /// fails after the token fired ends the call as
    /// [`Ending::Cancelled`](crate::Ending::Cancelled), carrying that
    /// failure.
    pub fn cancel_waits_on(self, token: &CancellationToken) -> Retry<P, Op, E, C, N, Guards> {
        self.guard(|g| {
            g.cancel = Some(token.clone());
            g.graceful = true;
        })
    }

    /// The same call with its guards changed by `set`.
    fn guard(self, set: impl FnOnce(&mut Guards)) -> Retry<P, Op, E, C, N, Guards> {
        let mut guards = self.guards.into_guards();
        set(&mut guards);
        Retry {
            policy: self.policy,
            op: self.op,
            classifier: self.classifier,
            notify: self.notify,
            guards,
            error: PhantomData,
        }
    }

    /// Runs the call.
    ///
    /// Returns the first success, or a [`RetryError`] saying how it ended
    /// with the last attempt's error.
    ///
    /// Cost: when the policy sets no time limit and no cancellation token is
    /// given, a first-try success allocates nothing, reads no clock and
    /// touches no random source; its future is little bigger than the
    /// operation's own. Everything a retry needs (timers, the backoff state,
    /// the bookkeeping) lives in a second future, boxed once when the first
    /// attempt fails, or up front when a time limit or a token needs a timer
    /// or a waiter from the first attempt on.
    #[allow(clippy::manual_async_fn, reason = "see the comment on the async block")]
    pub fn run<T, Fut>(mut self) -> impl Future<Output = Result<T, RetryError<E>>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<E>,
        N: Notify,
    {
        // A plain `async move` block rather than an `async fn`: an async
        // fn keeps a second copy of its arguments in its state, and every
        // byte of this future is copied on the happy path.
        async move {
            let policy = self.policy.borrow();
            let plain = policy.attempt_timeout.is_none()
                && policy.deadline.is_none()
                && self.guards.cancel().is_none();
            if !plain {
                return Box::pin(self.retrying(None)).await;
            }
            match (self.op)(Attempt {
                number: 1,
                timeout: None,
            })
            .await
            {
                Ok(value) => {
                    if let Some(b) = self.guards.budget() {
                        b.record_success();
                    }
                    Ok(value)
                }
                Err(e) => Box::pin(self.retrying(Some(e))).await,
            }
        }
    }

    /// The general loop. `first` is the error of a first attempt already
    /// made by [`Retry::run`]'s fast path.
    async fn retrying<T, Fut>(self, first: Option<E>) -> Result<T, RetryError<E>>
    where
        Op: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<E>,
        N: Notify,
    {
        let Retry {
            policy,
            mut op,
            classifier,
            mut notify,
            guards,
            error: PhantomData,
        } = self;
        let limits = Limits {
            policy: policy.borrow(),
            budget: guards.budget(),
            cancel: guards.cancel(),
            graceful: guards.graceful(),
        };
        let mut run = Run::<E>::new(limits.policy, u32::from(first.is_some()));
        let mut carried = first.map(AttemptError::Failed);

        loop {
            let failure = match carried.take() {
                Some(failure) => failure,
                None => match next_attempt(&mut run, &mut op, &limits).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(failure)) => failure,
                    Err(ending) => return Err(run.end(ending)),
                },
            };
            let Verdict { class, reason } = match &failure {
                AttemptError::Failed(e) => classifier.classify(e),
                AttemptError::TimedOut { .. } => Verdict::transient("attempt timeout"),
            };
            if let Some(b) = limits.budget {
                b.record_failure();
            }
            let now = Instant::now();
            run.started.get_or_insert(now);
            run.last = Some(failure);
            let delay = match limits.retry_delay(&mut run, class, now) {
                Ok(delay) => delay,
                Err(ending) => {
                    run.reason = Some(reason);
                    return Err(run.end(ending));
                }
            };
            let event = RetryEvent {
                attempt: run.attempts,
                max_attempts: limits.policy.max_attempts,
                class,
                reason: &reason,
                delay,
                server_wait: class.server_wait().is_some(),
            };
            announce(&mut notify, &event);
            run.reason = Some(reason);
            if !run.sleep(delay, limits.cancel).await {
                return Err(run.end(Ending::Cancelled));
            }
        }
    }
}

/// What bounds one call: its policy, the shared retry budget, and the
/// caller's cancellation (which cuts an attempt short unless `graceful`).
#[derive(Clone, Copy)]
struct Limits<'a> {
    policy: &'a Policy,
    budget: Option<&'a RetryBudget>,
    cancel: Option<&'a CancellationToken>,
    graceful: bool,
}

impl Limits<'_> {
    /// How long to wait before the next attempt after a failure of
    /// `class`, or how the call ends instead: cancelled, a class that is
    /// never retried, out of attempts, a server wait longer than the
    /// policy sits through, past the deadline, or out of budget.
    fn retry_delay<E>(
        &self,
        run: &mut Run<E>,
        class: Class,
        now: Instant,
    ) -> Result<Duration, Ending> {
        let policy = self.policy;
        if self.cancel.is_some_and(CancellationToken::is_cancelled) {
            return Err(Ending::Cancelled);
        }
        let give_up = match class {
            Class::RateLimited { wait } => Ending::RateLimited { wait },
            Class::Overloaded { wait } => Ending::Overloaded { wait },
            Class::Transient => Ending::Exhausted,
            Class::QuotaExhausted { reset } => return Err(Ending::QuotaExhausted { reset }),
            Class::Auth => return Err(Ending::Auth),
            Class::Permanent => return Err(Ending::Permanent),
        };
        if run.attempts >= policy.max_attempts {
            return Err(give_up);
        }
        let server_wait = class.server_wait();
        let delay = match server_wait {
            Some(wait) if wait > policy.max_server_wait => return Err(give_up),
            Some(wait) => wait,
            None => run
                .backoff
                .get_or_insert_with(|| Backoff::new(policy))
                .delay(policy, run.attempts),
        };
        if run
            .deadline
            .is_some_and(|d| now.checked_add(delay).is_none_or(|end| end >= d))
        {
            return Err(if server_wait.is_some() {
                give_up
            } else {
                Ending::DeadlineExceeded
            });
        }
        if self.budget.is_some_and(|b| !b.allows_retry()) {
            return Err(Ending::BudgetExhausted);
        }
        Ok(delay)
    }
}

/// Tells the debug log and the notify hook about a retry before its wait.
fn announce<N: Notify>(notify: &mut N, event: &RetryEvent<'_>) {
    tracing::debug!(
        attempt = event.attempt,
        max_attempts = event.max_attempts,
        reason = event.reason,
        delay_ms = u64::try_from(event.delay.as_millis()).unwrap_or(u64::MAX),
        "{}; retry {} of {} in {}",
        event.reason,
        event.attempt,
        event.max_attempts - 1,
        HumanDuration(event.delay),
    );
    notify.notify(event);
}

/// The bookkeeping of one call.
struct Run<E> {
    started: Option<Instant>,
    deadline: Option<Instant>,
    attempts: u32,
    waited: Duration,
    reason: Option<Cow<'static, str>>,
    last: Option<AttemptError<E>>,
    /// The computed backoff, made on the first wait that needs it.
    backoff: Option<Backoff>,
}

impl<E> Run<E> {
    /// The bookkeeping of a call under `policy` that has made `attempts`
    /// attempts already.
    fn new(policy: &Policy, attempts: u32) -> Self {
        let timed = policy.attempt_timeout.is_some() || policy.deadline.is_some();
        let started = timed.then(Instant::now);
        Run {
            started,
            deadline: started
                .zip(policy.deadline)
                .and_then(|(start, d)| start.checked_add(d)),
            attempts,
            waited: Duration::ZERO,
            reason: None,
            last: None,
            backoff: None,
        }
    }

    /// Waits `delay` before the next attempt, counting the time waited;
    /// false when cancelled first. Waits too short for a timer are skipped.
    async fn sleep(&mut self, delay: Duration, cancel: Option<&CancellationToken>) -> bool {
        if delay < TIMER_THRESHOLD {
            return true;
        }
        let slept_from = Instant::now();
        let finished = pause(delay, cancel).await;
        self.waited += Instant::now().saturating_duration_since(slept_from);
        finished
    }

    /// The time limit of the next attempt and whether it is the overall
    /// deadline (rather than the per-attempt timeout) that sets it.
    fn attempt_limit(&self, attempt_timeout: Option<Duration>) -> (Option<Duration>, bool) {
        let Some(deadline) = self.deadline else {
            return (attempt_timeout, false);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match attempt_timeout {
            Some(t) if t <= remaining => (Some(t), false),
            _ => (Some(remaining), true),
        }
    }

    fn end(self, ending: Ending) -> RetryError<E> {
        let elapsed = self
            .started
            .map(|s| Instant::now().saturating_duration_since(s))
            .unwrap_or_default();
        RetryError {
            ending,
            attempts: self.attempts,
            waited: self.waited,
            elapsed,
            reason: self.reason,
            last: self.last,
        }
    }
}

/// Starts the next attempt and waits for it: `Ok(Ok(value))` on success,
/// `Ok(Err(failure))` for a failure to classify, `Err(ending)` when the
/// call must end now (cancelled, or out of time).
async fn next_attempt<T, E, Op, Fut>(
    run: &mut Run<E>,
    op: &mut Op,
    limits: &Limits<'_>,
) -> Result<Result<T, AttemptError<E>>, Ending>
where
    Op: FnMut(Attempt) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let Limits {
        policy,
        budget,
        cancel,
        graceful,
    } = *limits;
    if cancel.is_some_and(|t| t.is_cancelled()) {
        return Err(Ending::Cancelled);
    }
    let (limit, limited_by_deadline) = run.attempt_limit(policy.attempt_timeout);
    if limit == Some(Duration::ZERO) {
        return Err(Ending::DeadlineExceeded);
    }
    run.attempts += 1;
    let fut = op(Attempt {
        number: run.attempts,
        timeout: limit,
    });
    let after = limit.unwrap_or_default();
    match attempt(fut, limit, cancel.filter(|_| !graceful)).await {
        Step::Done(Ok(value)) => {
            if let Some(b) = budget {
                b.record_success();
            }
            Ok(Ok(value))
        }
        Step::Done(Err(e)) => Ok(Err(AttemptError::Failed(e))),
        Step::TimedOut if limited_by_deadline => {
            // Keep the last real error when there is one: it says more than
            // "the deadline cut the attempt".
            if run.last.is_none() {
                run.last = Some(AttemptError::TimedOut { after });
                run.reason = Some(Cow::Borrowed("deadline"));
            }
            Err(Ending::DeadlineExceeded)
        }
        Step::TimedOut => Ok(Err(AttemptError::TimedOut { after })),
        Step::Cancelled => Err(Ending::Cancelled),
    }
}

enum Step<T> {
    Done(T),
    TimedOut,
    Cancelled,
}

/// Runs one attempt under its time limit and the caller's cancellation.
async fn attempt<F: Future>(
    fut: F,
    limit: Option<Duration>,
    cancel: Option<&CancellationToken>,
) -> Step<F::Output> {
    let limited = async move {
        match limit {
            None => Step::Done(fut.await),
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(output) => Step::Done(output),
                Err(_) => Step::TimedOut,
            },
        }
    };
    match cancel {
        None => limited.await,
        Some(token) => tokio::select! {
            biased;
            () = token.cancelled() => Step::Cancelled,
            step = limited => step,
        },
    }
}

/// Sleeps for `delay`; false when cancelled first.
async fn pause(delay: Duration, cancel: Option<&CancellationToken>) -> bool {
    let sleep = tokio::time::sleep(delay);
    match cancel {
        None => {
            sleep.await;
            true
        }
        Some(token) => tokio::select! {
            biased;
            () = token.cancelled() => false,
            () = sleep => true,
        },
    }
}
