//! How long a cooldown lasts when nobody said.

use std::time::Duration;

use crate::Reason;

/// The longest cooldown the ledger holds: 365 days. `cooldown set` refuses
/// a longer one before writing anything, and a stored deadline further
/// away (written by hand, by another version, on another machine) is read
/// as this far from now. A server's or a tool's own wait is held to the
/// reason's cap ([`Defaults::cap`]), far below it.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(365 * 24 * 3600);

/// The first cooldown and its ceiling for one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// The first cooldown.
    pub base: Duration,
    /// The longest escalation reaches, and the longest wait a server or a
    /// tool may ask for: a longer wait is cut to it (the key is tried again
    /// then, and cools again if still refused).
    pub cap: Duration,
}

/// Cooldown lengths for when the server or the tool did not say how long
/// to wait: a base per reason that doubles with each consecutive failure up
/// to a cap, then shortened by up to 20% at random so that keys that failed
/// together do not all come back together.
///
/// | reason | base | cap | why |
/// |---|---|---|---|
/// | rate_limit | 1 min | 15 min | provider windows are mostly a minute long, so a fixed 15 min first cooldown would idle a model for 14 minutes it could serve; 15 min bounds a persistent limit |
/// | overloaded | 30 s | 5 min | an overload is provider-wide and short; Envoy ejects for 30 s doubling to 5 min |
/// | error | 1 min | 10 min | a provider's 5xx; retried soon, but not in a loop |
/// | quota | 1 h | 24 h | a used-up allowance returns at a reset, usually printed by the tool (then that is used, up to the cap); daily quotas bound it, and a weekly one is tried again once a day |
/// | auth | 1 h | 24 h | nothing changes until someone logs in again, which ends the cooldown at once (the credential's fingerprint changes) |
///
/// Each success halves the count of consecutive failures, so escalation
/// decays as a key recovers.
#[derive(Clone, Debug, PartialEq)]
pub struct Durations {
    rate_limit: Defaults,
    overloaded: Defaults,
    error: Defaults,
    quota: Defaults,
    auth: Defaults,
    jitter: f64,
}

impl Default for Durations {
    fn default() -> Self {
        let d = |base, cap| Defaults {
            base: Duration::from_secs(base),
            cap: Duration::from_secs(cap),
        };
        Durations {
            rate_limit: d(60, 15 * 60),
            overloaded: d(30, 5 * 60),
            error: d(60, 10 * 60),
            quota: d(3600, 24 * 3600),
            auth: d(3600, 24 * 3600),
            jitter: 0.2,
        }
    }
}

impl Durations {
    /// The defaults of `reason`.
    pub fn defaults(&self, reason: Reason) -> Defaults {
        match reason {
            Reason::RateLimit => self.rate_limit,
            Reason::Overloaded => self.overloaded,
            Reason::Error => self.error,
            Reason::Quota => self.quota,
            Reason::Auth => self.auth,
        }
    }

    /// Replaces the defaults of `reason`.
    pub fn set(mut self, reason: Reason, defaults: Defaults) -> Self {
        let slot = match reason {
            Reason::RateLimit => &mut self.rate_limit,
            Reason::Overloaded => &mut self.overloaded,
            Reason::Error => &mut self.error,
            Reason::Quota => &mut self.quota,
            Reason::Auth => &mut self.auth,
        };
        *slot = defaults;
        self
    }

    /// The fraction by which a cooldown may be shortened at random (0 to 1).
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// The cooldown for the `failures`-th consecutive failure (1-based),
    /// before jitter: `base · 2^(failures-1)`, at most `cap`.
    pub fn escalated(&self, reason: Reason, failures: u32) -> Duration {
        let Defaults { base, cap } = self.defaults(reason);
        let doublings = failures.saturating_sub(1).min(32);
        base.saturating_mul(1u32 << doublings.min(31)).min(cap)
    }

    /// `escalated` shortened by the jitter; `sample` is uniform in [0, 1).
    pub fn jittered(&self, reason: Reason, failures: u32, sample: f64) -> Duration {
        let full = self.escalated(reason, failures);
        let keep = 1.0 - self.jitter * sample.clamp(0.0, 1.0);
        full.mul_f64(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalation_doubles_to_the_cap() {
        let d = Durations::default();
        let mins: Vec<u64> = (1..=6)
            .map(|n| d.escalated(Reason::RateLimit, n).as_secs())
            .collect();
        assert_eq!(mins, [60, 120, 240, 480, 900, 900]);
        assert_eq!(
            d.escalated(Reason::Auth, u32::MAX),
            Duration::from_secs(86_400)
        );
        assert_eq!(d.escalated(Reason::Overloaded, 0), Duration::from_secs(30));
    }

    #[test]
    fn jitter_only_shortens_and_stays_within_a_fifth() {
        let d = Durations::default();
        let full = d.escalated(Reason::Error, 3);
        assert_eq!(d.jittered(Reason::Error, 3, 0.0), full);
        let least = d.jittered(Reason::Error, 3, 0.999_999);
        assert!(least < full && least >= full.mul_f64(0.8));
        assert_eq!(d.clone().jitter(0.0).jittered(Reason::Error, 3, 0.5), full);
    }
}
