//! What happens to a delivery after an attempt: the per-delivery backoff
//! and the dead-letter cap. Pure rules, no I/O: the dispatcher turns each
//! [`Outcome`] into a [`Settle`] here and the store applies it.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use backstop_core::Policy;

use crate::handler::Handled;
use crate::model::{Claim, Outcome, Token};

/// The default dead-letter cap: handler failures before a delivery is dead.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// The default ceiling of the first wait after a failure.
pub const DEFAULT_BASE: Duration = Duration::from_secs(30);
/// The default cap of any wait.
pub const DEFAULT_CAP: Duration = Duration::from_secs(15 * 60);
/// The longest wait a schedule allows, whatever it is set to: 30 days.
pub const MAX_CAP: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a delivery handed back without running waits before it is
/// offered again (its node said it was busy or stopping).
pub const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// The retry schedule of every delivery: exponential backoff with full
/// jitter from `base` doubling to `cap`, each delivery on its own; dead
/// after `max_failures` handler failures. An operation's own settings
/// ([`crate::model::Settings`], carried by its claims) take the place of
/// these defaults for its deliveries.
///
/// The defaults (30 s doubling to 15 min, 10 failures) span about an hour
/// and a half of retrying before a delivery is declared dead — long enough
/// for a registry outage, short enough that a poison operation is seen the
/// same day.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use backstop_queue::Schedule;
///
/// let schedule = Schedule::default().base(Duration::from_secs(1)).cap(Duration::from_secs(8));
/// assert!(schedule.wait(3) <= Duration::from_secs(4));
/// assert!(schedule.wait(30) <= Duration::from_secs(8));
/// ```
#[derive(Debug)]
pub struct Schedule {
    policy: Policy,
    max_failures: u32,
    rng: Mutex<fastrand::Rng>,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            policy: Policy::api()
                .with_initial_delay(DEFAULT_BASE)
                .with_max_delay(DEFAULT_CAP),
            max_failures: DEFAULT_MAX_FAILURES,
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }
}

/// What the store should make of an attempt. Applied only while the
/// delivery's current attempt is `token`'s (see [`crate::Store::settle`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settle {
    /// The attempt.
    pub token: Token,
    /// When it was decided.
    pub at: SystemTime,
    /// The decision.
    pub decision: Decision,
    /// What the handler reported, when the attempt is worth a record of
    /// its own ([`Handled::worth_keeping`]): kept with the attempt.
    pub handled: Option<Handled>,
}

/// The decision for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Succeeded.
    Done,
    /// Try again at `next_at`, with these counters.
    Retry {
        /// When.
        next_at: SystemTime,
        /// Failures counted so far.
        failures: u32,
        /// Backoff tries so far.
        tries: u32,
        /// The error to show.
        error: String,
    },
    /// Dead: the cap is reached.
    Dead {
        /// Failures counted (the cap).
        failures: u32,
        /// Backoff tries.
        tries: u32,
        /// The last error.
        error: String,
    },
    /// Back to pending with nothing spent; when `unreachable`, the node is
    /// parked until a heartbeat proves it back.
    Release {
        /// When it may be offered again.
        next_at: SystemTime,
        /// Why.
        error: String,
        /// The node could not be reached.
        unreachable: bool,
    },
}

impl Schedule {
    /// Sets the ceiling of the first wait (at most [`MAX_CAP`]).
    pub fn base(mut self, base: Duration) -> Self {
        self.policy = self.policy.with_initial_delay(base.min(MAX_CAP));
        self
    }

    /// Sets the longest wait (at most [`MAX_CAP`]).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.policy = self.policy.with_max_delay(cap.min(MAX_CAP));
        self
    }

    /// Sets the dead-letter cap (at least 1).
    pub fn max_failures(mut self, n: u32) -> Self {
        self.max_failures = n.max(1);
        self
    }

    /// Seeds the jitter, for tests.
    pub fn seed(self, seed: u64) -> Self {
        Schedule {
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            ..self
        }
    }

    /// The dead-letter cap.
    pub fn get_max_failures(&self) -> u32 {
        self.max_failures
    }

    /// The wait after the `tries`-th unsuccessful try: uniform in
    /// `[0, min(cap, base · 2^(tries-1))]`, the engine's full jitter.
    pub fn wait(&self, tries: u32) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        self.policy.delay_after(tries, &mut rng)
    }

    /// [`Schedule::wait`] for a delivery of an operation with its own
    /// base or max delay: core's policy with those set (bounded by
    /// [`MAX_CAP`], as [`Schedule::base`] and [`Schedule::cap`] bound
    /// theirs).
    fn wait_for(&self, claim: &Claim, tries: u32) -> Duration {
        let own = &claim.settings;
        if own.base_delay.is_none() && own.max_delay.is_none() {
            return self.wait(tries);
        }
        let mut policy = self.policy.clone();
        if let Some(base) = own.base_delay {
            policy = policy.with_initial_delay(base.min(MAX_CAP));
        }
        if let Some(cap) = own.max_delay {
            policy = policy.with_max_delay(cap.min(MAX_CAP));
        }
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        policy.delay_after(tries, &mut rng)
    }

    /// The decision for `outcome` of the attempt `claim`, decided at `now`;
    /// `None` for [`Outcome::TimedOut`], which leaves the attempt in flight
    /// until a late reply or the end of its lease.
    pub fn decide(&self, claim: &Claim, outcome: &Outcome, now: SystemTime) -> Option<Settle> {
        let decision = match outcome {
            Outcome::Done => Decision::Done,
            Outcome::Failed(error) => {
                let failures = claim.failures.saturating_add(1);
                let tries = claim.tries.saturating_add(1);
                let cap = claim
                    .settings
                    .max_failures
                    .map_or(self.max_failures, |n| n.max(1));
                if failures >= cap {
                    Decision::Dead {
                        failures,
                        tries,
                        error: error.clone(),
                    }
                } else {
                    Decision::Retry {
                        next_at: now + self.wait_for(claim, tries),
                        failures,
                        tries,
                        error: error.clone(),
                    }
                }
            }
            Outcome::Temporary(error) => {
                let tries = claim.tries.saturating_add(1);
                Decision::Retry {
                    next_at: now + self.wait_for(claim, tries),
                    failures: claim.failures,
                    tries,
                    error: format!("temporary: {error}"),
                }
            }
            Outcome::Unreachable(error) => Decision::Release {
                next_at: now,
                error: error.clone(),
                unreachable: true,
            },
            Outcome::Released(error) => Decision::Release {
                next_at: now + RELEASE_DELAY,
                error: error.clone(),
                unreachable: false,
            },
            Outcome::TimedOut => return None,
        };
        Some(Settle {
            token: claim.token,
            at: now,
            decision,
            handled: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn claim(failures: u32, tries: u32) -> Claim {
        Claim {
            token: Token {
                delivery: 1,
                attempt: 3,
            },
            op: 1,
            node: "n".into(),
            transport: "local".into(),
            kind: "install".into(),
            key: None,
            payload: "{}".into(),
            failures,
            tries,
            lease_until: UNIX_EPOCH,
            settings: crate::model::Settings::default(),
        }
    }

    fn schedule() -> Schedule {
        Schedule::default()
            .base(Duration::from_secs(30))
            .cap(Duration::from_secs(900))
            .seed(1)
    }

    #[test]
    fn failures_back_off_under_a_doubling_ceiling_then_die_at_the_cap() {
        let s = schedule();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = claim(0, 0);
        for n in 1..DEFAULT_MAX_FAILURES {
            let Some(Settle {
                decision:
                    Decision::Retry {
                        next_at,
                        failures,
                        tries,
                        ..
                    },
                ..
            }) = s.decide(&c, &Outcome::Failed("boom".into()), now)
            else {
                panic!("failure {n} should retry");
            };
            assert_eq!((failures, tries), (n, n));
            let ceiling = Duration::from_secs(30 * (1 << (n - 1))).min(Duration::from_secs(900));
            assert!(next_at >= now && next_at <= now + ceiling, "failure {n}");
            c = claim(failures, tries);
        }
        let settle = s.decide(&c, &Outcome::Failed("still boom".into()), now);
        assert_eq!(
            settle.map(|s| s.decision),
            Some(Decision::Dead {
                failures: 10,
                tries: 10,
                error: "still boom".into()
            })
        );
    }

    #[test]
    fn temporary_failures_grow_the_backoff_but_spend_no_attempt() {
        let s = schedule();
        let now = UNIX_EPOCH;
        let v = s
            .decide(
                &claim(9, 12),
                &Outcome::Temporary("rate limited".into()),
                now,
            )
            .map(|s| s.decision);
        assert!(
            matches!(
                v,
                Some(Decision::Retry {
                    failures: 9,
                    tries: 13,
                    ..
                })
            ),
            "{v:?}"
        );
    }

    #[test]
    fn unreachable_and_released_spend_nothing() {
        let s = schedule();
        let now = UNIX_EPOCH;
        let v = s
            .decide(
                &claim(4, 4),
                &Outcome::Unreachable("no responders".into()),
                now,
            )
            .map(|s| s.decision);
        assert_eq!(
            v,
            Some(Decision::Release {
                next_at: now,
                error: "no responders".into(),
                unreachable: true
            })
        );
        let v = s
            .decide(&claim(4, 4), &Outcome::Released("stopping".into()), now)
            .map(|s| s.decision);
        assert!(matches!(
            v,
            Some(Decision::Release {
                unreachable: false,
                ..
            })
        ));
    }

    #[test]
    fn a_timeout_decides_nothing() {
        assert_eq!(
            schedule().decide(&claim(0, 0), &Outcome::TimedOut, UNIX_EPOCH),
            None
        );
    }

    #[test]
    fn absurd_settings_cannot_overflow_a_time() {
        let s = Schedule::default().base(Duration::MAX).cap(Duration::MAX);
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let v = s.decide(&claim(0, 60), &Outcome::Failed("x".into()), now);
        assert!(
            matches!(v.map(|s| s.decision), Some(Decision::Retry { next_at, .. }) if next_at <= now + MAX_CAP)
        );
    }

    #[test]
    fn an_operation_s_own_settings_take_the_place_of_the_defaults() {
        let s = schedule();
        let own = Claim {
            settings: crate::model::Settings {
                max_failures: Some(2),
                base_delay: Some(Duration::from_millis(10)),
                max_delay: Some(Duration::from_millis(20)),
                timeout: None,
            },
            ..claim(0, 0)
        };
        let now = UNIX_EPOCH;
        for tries in 0..20 {
            let v = s
                .decide(
                    &Claim {
                        tries,
                        ..own.clone()
                    },
                    &Outcome::Temporary("later".into()),
                    now,
                )
                .map(|s| s.decision);
            assert!(
                matches!(v, Some(Decision::Retry { next_at, .. }) if next_at <= now + Duration::from_millis(20)),
                "{v:?}"
            );
        }
        let first = s
            .decide(&own, &Outcome::Failed("x".into()), now)
            .map(|s| s.decision);
        assert!(
            matches!(first, Some(Decision::Retry { failures: 1, .. })),
            "{first:?}"
        );
        let second = s
            .decide(
                &Claim {
                    failures: 1,
                    tries: 1,
                    ..own
                },
                &Outcome::Failed("x".into()),
                now,
            )
            .map(|s| s.decision);
        assert!(
            matches!(second, Some(Decision::Dead { failures: 2, .. })),
            "{second:?}"
        );
    }

    #[test]
    fn a_cap_of_one_dies_at_the_first_failure() {
        let s = schedule().max_failures(0);
        assert_eq!(s.get_max_failures(), 1);
        let v = s.decide(&claim(0, 0), &Outcome::Failed("x".into()), UNIX_EPOCH);
        assert!(matches!(v.map(|s| s.decision), Some(Decision::Dead { .. })));
    }
}
