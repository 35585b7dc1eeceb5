//! The retry policy: how many attempts, how long to wait between them, and how
//! long any attempt or the whole call may take.

use std::time::Duration;

/// How the engine spreads its waits between attempts.
///
/// Every flavour stays below the policy's `max_delay`. With [`Jitter::Full`]
/// the randomness is applied *after* the cap, so clients that have all
/// reached the cap still wait different amounts instead of retrying in
/// lockstep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniform in `[0, min(max_delay, initial_delay · multiplier^(n-1))]`.
    /// Fewest calls to a struggling server in AWS's simulations; the default.
    #[default]
    Full,
    /// `min(max_delay, uniform in [initial_delay, 3 · previous delay])`, as in
    /// AWS's "decorrelated jitter": finishes a little sooner than full jitter
    /// at the price of more calls.
    Decorrelated,
    /// The exponential ceiling itself, no randomness. For tests and for
    /// callers that add their own spreading; never use it for a fleet.
    None,
}

/// A retry policy: a plain value, cheap to clone and to share.
///
/// The defaults are [`Policy::api`]. Setters clamp nonsense instead of
/// failing: zero attempts become one, a multiplier below one (or NaN)
/// becomes one.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::{Jitter, Policy};
///
/// let policy = Policy::api()
///     .with_max_attempts(3)
///     .with_max_delay(Duration::from_secs(10))
///     .with_deadline(Duration::from_secs(60));
/// assert_eq!(policy.max_attempts(), 3);
/// assert_eq!(policy.jitter(), Jitter::Full);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub(crate) max_attempts: u32,
    pub(crate) initial_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) multiplier: f64,
    pub(crate) jitter: Jitter,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) max_server_wait: Duration,
    pub(crate) seed: Option<u64>,
}

/// Throughput the transfer preset assumes even a poor link sustains: 10 MiB/s.
pub const TRANSFER_FLOOR_BYTES_PER_SEC: u64 = 10 * 1024 * 1024;
/// Shortest per-attempt ceiling of the transfer preset: 5 minutes.
pub const TRANSFER_MIN_ATTEMPT: Duration = Duration::from_secs(5 * 60);
/// Longest per-attempt ceiling of the transfer preset: 8 hours.
pub const TRANSFER_MAX_ATTEMPT: Duration = Duration::from_secs(8 * 60 * 60);

impl Default for Policy {
    fn default() -> Self {
        Policy::api()
    }
}

impl Policy {
    /// The preset for API calls (the Hugging Face Hub, model providers).
    ///
    /// - 5 attempts, 1 s initial delay doubling to a 30 s cap: the numbers
    ///   that kept a scheduled gallery job alive through the Hub's transient
    ///   429s; four waits of at most 1 + 2 + 4 + 8 s keep a doomed call under
    ///   a minute of sleeping.
    /// - Full jitter, so a fleet of scheduled jobs does not come back at once.
    /// - 30 s per attempt: an API answer that takes longer is a hung
    ///   connection, not a slow one.
    /// - Server waits honoured up to 60 s (the most Portkey honours); a
    ///   server that asks for longer ends the call at once as rate limited,
    ///   carrying the wait, instead of retrying early or sleeping for an hour.
    ///
    /// Retry an async call with this preset, honouring the server's
    /// Retry-After:
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// use backstop_core::{Policy, classify_status, wait::retry_after};
    /// # struct Refused { status: u16, retry_after: Option<&'static str> }
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let calls = std::cell::Cell::new(0);
    /// # let call_api = || { calls.set(calls.get() + 1); let first = calls.get() == 1;
    /// #     async move { if first { Err(Refused { status: 429, retry_after: Some("7") }) } else { Ok("models") } } };
    /// # let start = tokio::time::Instant::now();
    /// let answer = Policy::api()
    ///     .retry(|_| call_api())
    ///     .classify(|e| classify_status(e.status, e.retry_after.and_then(|v| retry_after(v, SystemTime::now()))))
    ///     .run()
    ///     .await;
    /// # assert_eq!(answer.ok(), Some("models"));
    /// # assert_eq!(calls.get(), 2);
    /// # assert_eq!(start.elapsed(), Duration::from_secs(7), "the server's wait, not a backoff");
    /// # }
    /// ```
    pub fn api() -> Self {
        Policy {
            max_attempts: 5,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: Jitter::Full,
            attempt_timeout: Some(Duration::from_secs(30)),
            deadline: None,
            max_server_wait: Duration::from_secs(60),
            seed: None,
        }
    }

    /// The preset for moving a payload of `size` bytes.
    ///
    /// - 6 attempts, 5 s initial delay doubling to a 2 min cap: a storage
    ///   backend that throttles needs tens of seconds to recover, and six
    ///   attempts span roughly four minutes of waiting at most.
    /// - Per-attempt timeout from the size, see
    ///   [`Policy::transfer_attempt_timeout`]; the waits between attempts do
    ///   *not* depend on the size, so a slow first attempt on a huge file
    ///   cannot eat the time its retries need.
    /// - Full jitter applied after the cap (jitter capped together with the
    ///   delay leaves every client at the cap retrying in lockstep).
    /// - Server waits honoured up to the 2 min cap.
    ///
    /// Retry a download of `size` bytes with this preset, honouring the
    /// server's Retry-After:
    ///
    /// ```
    /// # use std::time::{Duration, SystemTime};
    /// use backstop_core::{Policy, classify_status, wait::retry_after};
    /// # struct Refused { status: u16, retry_after: Option<&'static str> }
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// # let (size, calls) = (5u64 << 30, std::cell::Cell::new(0));
    /// # let download = |_timeout: Option<Duration>| { calls.set(calls.get() + 1); let first = calls.get() == 1;
    /// #     async move { if first { Err(Refused { status: 503, retry_after: Some("90") }) } else { Ok(size) } } };
    /// # let start = tokio::time::Instant::now();
    /// let written = Policy::transfer(size)
    ///     .retry(|attempt| download(attempt.timeout))
    ///     .classify(|e| classify_status(e.status, e.retry_after.and_then(|v| retry_after(v, SystemTime::now()))))
    ///     .run()
    ///     .await;
    /// # assert_eq!(written.ok(), Some(size));
    /// # assert_eq!(start.elapsed(), Duration::from_secs(90), "the server's wait, not a backoff");
    /// # }
    /// ```
    pub fn transfer(size: u64) -> Self {
        Policy {
            max_attempts: 6,
            initial_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(120),
            multiplier: 2.0,
            jitter: Jitter::Full,
            attempt_timeout: Some(Self::transfer_attempt_timeout(size)),
            deadline: None,
            max_server_wait: Duration::from_secs(120),
            seed: None,
        }
    }

    /// The per-attempt ceiling for a payload of `size` bytes: the time it
    /// takes at [`TRANSFER_FLOOR_BYTES_PER_SEC`], doubled as a safety
    /// factor, clamped to [[`TRANSFER_MIN_ATTEMPT`], [`TRANSFER_MAX_ATTEMPT`]].
    ///
    /// ```
    /// use std::time::Duration;
    /// use backstop_core::Policy;
    ///
    /// // 1 MiB: far below the floor, so 5 minutes.
    /// assert_eq!(Policy::transfer_attempt_timeout(1 << 20), Duration::from_secs(300));
    /// // 10 GiB at 10 MiB/s is 1024 s, doubled.
    /// assert_eq!(Policy::transfer_attempt_timeout(10 << 30), Duration::from_secs(2048));
    /// // 1 TiB would be 58 h; clamped to 8 h.
    /// assert_eq!(Policy::transfer_attempt_timeout(1 << 40), Duration::from_secs(8 * 3600));
    /// ```
    pub fn transfer_attempt_timeout(size: u64) -> Duration {
        let nanos = u128::from(size) * 2 * 1_000_000_000 / u128::from(TRANSFER_FLOOR_BYTES_PER_SEC);
        let max = TRANSFER_MAX_ATTEMPT.as_nanos();
        let nanos = nanos.clamp(TRANSFER_MIN_ATTEMPT.as_nanos(), max);
        // Bounded by `max`, which fits in u64 nanoseconds.
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Total number of attempts, the first one included (at least 1).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The ceiling of the first wait; later ceilings grow by the multiplier.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// No computed wait exceeds this (server waits have their own limit,
    /// [`Policy::with_max_server_wait`]).
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Growth factor of the ceiling per attempt (at least 1; NaN becomes 1).
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier >= 1.0 && multiplier.is_finite() {
            multiplier
        } else {
            1.0
        };
        self
    }

    /// How waits are randomised.
    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The longest one attempt may run; `None` lets an attempt run until it
    /// finishes or the overall deadline ends it. An attempt cut short by this
    /// limit counts as a transient failure.
    pub fn with_attempt_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.attempt_timeout = timeout.into();
        self
    }

    /// The longest the whole call may take, attempts and waits together.
    /// The engine never starts a wait that would end past it.
    pub fn with_deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The longest server-requested wait (Retry-After and friends) the
    /// engine will sleep through, at most [`MAX_SIGNAL`](crate::wait::MAX_SIGNAL)
    /// (a week) whatever is asked here. A longer request ends the call at
    /// once with the wait in the error.
    pub fn with_max_server_wait(mut self, wait: Duration) -> Self {
        self.max_server_wait = wait.min(crate::wait::MAX_SIGNAL);
        self
    }

    /// Seeds the jitter so that a schedule can be replayed in tests. Never
    /// share one seed across a fleet: the whole point of jitter is that
    /// clients disagree.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// See [`Policy::with_max_attempts`].
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }
    /// See [`Policy::with_initial_delay`].
    pub fn initial_delay(&self) -> Duration {
        self.initial_delay
    }
    /// See [`Policy::with_max_delay`].
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
    /// See [`Policy::with_multiplier`].
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }
    /// See [`Policy::with_jitter`].
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }
    /// See [`Policy::with_attempt_timeout`].
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.attempt_timeout
    }
    /// See [`Policy::with_deadline`].
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }
    /// See [`Policy::with_max_server_wait`].
    pub fn max_server_wait(&self) -> Duration {
        self.max_server_wait
    }

    /// The ceiling of the wait after the `retry`-th failure (1-based):
    /// `min(max_delay, initial_delay · multiplier^(retry-1))`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        if self.initial_delay.is_zero() || self.max_delay.is_zero() {
            return Duration::ZERO;
        }
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_delay.as_secs_f64() * self.multiplier.powi(exp);
        let cap = self.max_delay.as_secs_f64();
        if secs >= cap || !secs.is_finite() {
            self.max_delay
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The most time the computed waits of this policy can add up to (the
    /// sum of every ceiling). It depends on the attempts and delays only,
    /// never on a payload size.
    pub fn max_total_backoff(&self) -> Duration {
        (1..self.max_attempts).map(|n| self.ceiling(n)).sum()
    }
}

impl Policy {
    /// The wait after the `retry`-th failure (1-based), for callers that
    /// keep only a count between attempts, such as a queue that stores one
    /// row per delivery: the policy's own jitter, drawn from `rng`, so that a
    /// thousand deliveries failing together do not come back together.
    /// Decorrelated jitter needs the previous wait, which such a caller does
    /// not keep; the previous ceiling stands in for it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use backstop_core::Policy;
    ///
    /// let policy = Policy::api().with_max_delay(Duration::from_secs(60));
    /// let mut rng = fastrand::Rng::with_seed(7);
    /// for retry in 1..40 {
    ///     assert!(policy.delay_after(retry, &mut rng) <= policy.ceiling(retry));
    /// }
    /// ```
    pub fn delay_after(&self, retry: u32, rng: &mut fastrand::Rng) -> Duration {
        let mut backoff = Backoff {
            rng: rng.fork(),
            previous: self
                .ceiling(retry.saturating_sub(1))
                .max(self.initial_delay),
        };
        backoff.delay(self, retry.max(1))
    }
}

/// The computed waits of one call, for loops that cannot use the async
/// engine (a blocking database call retried on "busy"): the wait after the
/// first failure, after the second, and so on, `max_attempts - 1` of them.
///
/// ```
/// use std::time::Duration;
/// use backstop_core::{Jitter, Policy};
///
/// let policy = Policy::api().with_jitter(Jitter::None);
/// let waits: Vec<u64> = policy.delays().map(|d| d.as_secs()).collect();
/// assert_eq!(waits, [1, 2, 4, 8]);
/// ```
#[derive(Debug)]
pub struct Delays<'p> {
    policy: &'p Policy,
    backoff: Backoff,
    retry: u32,
}

impl Policy {
    /// The waits between this policy's attempts, jittered as it says.
    pub fn delays(&self) -> Delays<'_> {
        Delays {
            policy: self,
            backoff: Backoff::new(self),
            retry: 0,
        }
    }
}

impl Iterator for Delays<'_> {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retry + 1 >= self.policy.max_attempts {
            return None;
        }
        self.retry += 1;
        Some(self.backoff.delay(self.policy, self.retry))
    }
}

/// The sequence of computed waits of one call. Created at the first failure
/// so that a call that succeeds at once never touches the random source.
#[derive(Debug)]
pub(crate) struct Backoff {
    rng: fastrand::Rng,
    previous: Duration,
}

impl Backoff {
    pub(crate) fn new(policy: &Policy) -> Self {
        let rng = match policy.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Backoff {
            rng,
            previous: policy.initial_delay,
        }
    }

    /// The wait after the `retry`-th failure (1-based).
    pub(crate) fn delay(&mut self, policy: &Policy, retry: u32) -> Duration {
        let delay = match policy.jitter {
            Jitter::None => policy.ceiling(retry),
            Jitter::Full => self.uniform(Duration::ZERO, policy.ceiling(retry)),
            Jitter::Decorrelated => {
                let high = self.previous.saturating_mul(3).max(policy.initial_delay);
                self.uniform(policy.initial_delay, high)
                    .min(policy.max_delay)
            }
        };
        self.previous = delay;
        delay
    }

    fn uniform(&mut self, low: Duration, high: Duration) -> Duration {
        let low = u64::try_from(low.as_nanos()).unwrap_or(u64::MAX);
        let high = u64::try_from(high.as_nanos()).unwrap_or(u64::MAX);
        if high <= low {
            return Duration::from_nanos(high);
        }
        Duration::from_nanos(self.rng.u64(low..=high))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_preset_matches_its_documentation() {
        let p = Policy::api();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.initial_delay, Duration::from_secs(1));
        assert_eq!(p.max_delay, Duration::from_secs(30));
        assert_eq!(p.jitter, Jitter::Full);
    }

    #[test]
    fn transfer_preset_matches_its_documentation() {
        let p = Policy::transfer(0);
        assert_eq!(p.max_attempts, 6);
        assert_eq!(p.initial_delay, Duration::from_secs(5));
        assert_eq!(p.max_delay, Duration::from_secs(120));
        assert_eq!(p.attempt_timeout, Some(Duration::from_secs(300)));
    }

    #[test]
    fn transfer_timeout_table() {
        let mib = 1u64 << 20;
        let gib = 1u64 << 30;
        let cases = [
            (0, 300),
            (100 * mib, 300),
            (1500 * mib, 300),
            (1536 * mib, 307),
            (10 * gib, 2048),
            (100 * gib, 20480),
            (141 * gib, 28800),
            (u64::MAX, 28800),
        ];
        for (size, secs) in cases {
            assert_eq!(
                Policy::transfer_attempt_timeout(size).as_secs(),
                secs,
                "size {size}"
            );
        }
    }

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let p = Policy::api();
        let got: Vec<u64> = (1..=7).map(|n| p.ceiling(n).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn setters_clamp_nonsense() {
        let p = Policy::api().with_max_attempts(0).with_multiplier(f64::NAN);
        assert_eq!(p.max_attempts, 1);
        assert_eq!(p.multiplier, 1.0);
        assert_eq!(Policy::api().with_multiplier(0.5).multiplier, 1.0);
    }

    #[test]
    fn full_jitter_at_the_cap_is_not_lockstep() {
        let p = Policy::api().with_max_attempts(50);
        let mut a = Backoff::new(&p.clone().with_seed(1));
        let mut b = Backoff::new(&p.clone().with_seed(2));
        let at_cap_a: Vec<_> = (20..30).map(|n| a.delay(&p, n)).collect();
        let at_cap_b: Vec<_> = (20..30).map(|n| b.delay(&p, n)).collect();
        assert_ne!(at_cap_a, at_cap_b);
        assert!(at_cap_a.iter().all(|d| *d <= p.max_delay));
        // Spread over the whole range, not bunched at the cap.
        assert!(at_cap_a.iter().any(|d| *d < p.max_delay / 2));
    }

    #[test]
    fn stateless_delays_are_full_jitter_under_the_ceiling() {
        let p = Policy::api()
            .with_initial_delay(Duration::from_secs(30))
            .with_max_delay(Duration::from_secs(900));
        let mut rng = fastrand::Rng::with_seed(3);
        let at_cap: Vec<_> = (0..50).map(|_| p.delay_after(20, &mut rng)).collect();
        assert!(at_cap.iter().all(|d| *d <= Duration::from_secs(900)));
        assert!(
            at_cap.iter().any(|d| *d < Duration::from_secs(450)),
            "spread, not bunched at the cap"
        );
        assert!(p.delay_after(1, &mut rng) <= Duration::from_secs(30));
        // Retry 0 is read as the first.
        assert!(p.delay_after(0, &mut rng) <= Duration::from_secs(30));
        let none = p.clone().with_jitter(Jitter::None);
        assert_eq!(none.delay_after(2, &mut rng), Duration::from_secs(60));
    }

    #[test]
    fn decorrelated_stays_between_base_and_cap() {
        let p = Policy::api().with_jitter(Jitter::Decorrelated).with_seed(7);
        let mut b = Backoff::new(&p);
        let mut previous = p.initial_delay;
        for n in 1..200 {
            let d = b.delay(&p, n);
            assert!(d >= p.initial_delay && d <= p.max_delay, "{d:?}");
            assert!(d <= previous * 3, "{d:?} after {previous:?}");
            previous = d;
        }
    }
}
