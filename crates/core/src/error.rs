//! How a retried call ended when it did not succeed.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::HumanDuration;

/// Why the engine stopped without a success, for a caller to match on:
/// `Ending::RateLimited` is the "skip this run, try later" case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Rate limited, and either the attempts ran out or the server asked for
    /// a longer wait than the policy honours (`wait` carries it).
    RateLimited {
        /// The wait the server asked for last, when it said.
        wait: Option<Duration>,
    },
    /// The server stayed overloaded, or asked for a wait longer than the
    /// policy honours.
    Overloaded {
        /// The wait the server asked for last, when it said.
        wait: Option<Duration>,
    },
    /// A quota ran out; no retry within this call will help.
    QuotaExhausted {
        /// When the quota resets, measured from the failure, when known.
        reset: Option<Duration>,
    },
    /// Every attempt failed transiently.
    Exhausted,
    /// A failure that retrying cannot fix.
    Permanent,
    /// The credentials were refused.
    Auth,
    /// The caller cancelled (a token, Ctrl-C).
    Cancelled,
    /// The policy's overall deadline came first.
    DeadlineExceeded,
    /// The shared retry budget refused another attempt.
    BudgetExhausted,
}

impl Ending {
    /// Whether trying again later may succeed: everything but a permanent
    /// failure, an auth failure and a cancellation. This is the line between
    /// exit codes 75 and 1.
    pub fn is_temporary(&self) -> bool {
        !matches!(self, Ending::Permanent | Ending::Auth | Ending::Cancelled)
    }

    /// The wait the server asked for, when the ending carries one.
    pub fn server_wait(&self) -> Option<Duration> {
        match *self {
            Ending::RateLimited { wait } | Ending::Overloaded { wait } => wait,
            Ending::QuotaExhausted { reset } => reset,
            _ => None,
        }
    }
}

/// The error of one attempt: the operation's own, or the attempt timeout.
#[derive(Debug)]
pub enum AttemptError<E> {
    /// The operation returned this error.
    Failed(E),
    /// The attempt ran into the per-attempt timeout (or the overall
    /// deadline) and was dropped.
    TimedOut {
        /// How long the attempt had been running.
        after: Duration,
    },
}

impl<E: fmt::Display> fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptError::Failed(e) => e.fmt(f),
            AttemptError::TimedOut { after } => {
                write!(f, "attempt timed out after {}", HumanDuration(*after))
            }
        }
    }
}

impl<E: Error + 'static> Error for AttemptError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            AttemptError::Failed(e) => e.source(),
            AttemptError::TimedOut { .. } => None,
        }
    }
}

/// A retried call that did not succeed: how it ended, how hard the engine
/// tried, and the last attempt's error as its [`source`](Error::source).
///
/// `Display` says what happened in one line ("rate limited: 5 attempts over
/// 31 s; the server asks to wait 55 s") and leaves the underlying error to
/// the source chain.
#[derive(Debug)]
pub struct RetryError<E> {
    /// How the call ended.
    pub ending: Ending,
    /// Attempts started, the first one included.
    pub attempts: u32,
    /// Time spent sleeping between attempts.
    pub waited: Duration,
    /// Time from the start of the first attempt to the end. When the policy
    /// has neither an attempt timeout nor a deadline the engine does not read
    /// the clock before the first failure, and this counts from there.
    pub elapsed: Duration,
    /// The short reason of the last failure ("HTTP 503"), if an attempt failed.
    pub reason: Option<Cow<'static, str>>,
    /// The last attempt's error. `None` only when the call was cancelled or
    /// ran out of time before any attempt finished.
    pub last: Option<AttemptError<E>>,
}

impl<E> RetryError<E> {
    /// The last error the operation itself returned, skipping a timeout.
    pub fn last_error(&self) -> Option<&E> {
        match &self.last {
            Some(AttemptError::Failed(e)) => Some(e),
            _ => None,
        }
    }

    /// Consumes the error, returning the operation's last own error.
    pub fn into_last_error(self) -> Option<E> {
        match self.last {
            Some(AttemptError::Failed(e)) => Some(e),
            _ => None,
        }
    }

    /// Turns the last error into another type, keeping everything else.
    pub fn map_err<F>(self, f: impl FnOnce(E) -> F) -> RetryError<F> {
        RetryError {
            ending: self.ending,
            attempts: self.attempts,
            waited: self.waited,
            elapsed: self.elapsed,
            reason: self.reason,
            last: self.last.map(|last| match last {
                AttemptError::Failed(e) => AttemptError::Failed(f(e)),
                AttemptError::TimedOut { after } => AttemptError::TimedOut { after },
            }),
        }
    }

    /// The one-line description, naming what was called (a host, a tool):
    /// "rate limited by huggingface.co: 5 attempts over 31 s; the server asks
    /// to wait 55 s".
    pub fn display_for<'a>(&'a self, subject: &'a str) -> impl fmt::Display + 'a {
        Describe {
            error: self,
            subject,
        }
    }
}

struct Describe<'a, E> {
    error: &'a RetryError<E>,
    subject: &'a str,
}

impl<E> fmt::Display for Describe<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.error;
        let s = self.subject;
        let named = !s.is_empty();
        match e.ending {
            Ending::RateLimited { .. } if named => write!(f, "rate limited by {s}")?,
            Ending::RateLimited { .. } => f.write_str("rate limited")?,
            Ending::Overloaded { .. } if named => write!(f, "{s} is overloaded")?,
            Ending::Overloaded { .. } => f.write_str("server overloaded")?,
            Ending::QuotaExhausted { .. } if named => write!(f, "quota exhausted at {s}")?,
            Ending::QuotaExhausted { .. } => f.write_str("quota exhausted")?,
            Ending::Exhausted if named => write!(f, "{s} kept failing")?,
            Ending::Exhausted => f.write_str("kept failing")?,
            Ending::Permanent if named => write!(f, "request to {s} failed, not retried")?,
            Ending::Permanent => f.write_str("failed, not retried")?,
            Ending::Auth if named => write!(f, "{s} refused the credentials")?,
            Ending::Auth => f.write_str("credentials refused")?,
            Ending::Cancelled if named => write!(f, "request to {s} cancelled")?,
            Ending::Cancelled => f.write_str("cancelled")?,
            Ending::DeadlineExceeded if named => write!(f, "deadline passed calling {s}")?,
            Ending::DeadlineExceeded => f.write_str("deadline passed")?,
            Ending::BudgetExhausted if named => write!(f, "retry budget exhausted calling {s}")?,
            Ending::BudgetExhausted => f.write_str("retry budget exhausted")?,
        }
        let plural = if e.attempts == 1 { "" } else { "s" };
        write!(
            f,
            ": {} attempt{plural} over {}",
            e.attempts,
            HumanDuration(e.elapsed)
        )?;
        match e.ending {
            Ending::RateLimited { wait: Some(w) } | Ending::Overloaded { wait: Some(w) } => {
                write!(f, "; the server asks to wait {}", HumanDuration(w))
            }
            Ending::QuotaExhausted { reset: Some(r) } => {
                write!(f, "; it resets in {}", HumanDuration(r))
            }
            _ => Ok(()),
        }
    }
}

impl<E> fmt::Display for RetryError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.display_for("").fmt(f)
    }
}

impl<E: Error + 'static> Error for RetryError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self.last.as_ref()? {
            AttemptError::Failed(e) => Some(e),
            timed_out => Some(timed_out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn error(ending: Ending, attempts: u32, secs: u64) -> RetryError<io::Error> {
        RetryError {
            ending,
            attempts,
            waited: Duration::from_secs(secs),
            elapsed: Duration::from_secs(secs),
            reason: Some("HTTP 429".into()),
            last: Some(AttemptError::Failed(io::Error::other("boom"))),
        }
    }

    #[test]
    fn messages() {
        let wait = Some(Duration::from_secs(55));
        let e = error(Ending::RateLimited { wait }, 5, 31);
        assert_eq!(
            e.display_for("huggingface.co").to_string(),
            "rate limited by huggingface.co: 5 attempts over 31 s; the server asks to wait 55 s"
        );
        assert_eq!(
            e.to_string(),
            "rate limited: 5 attempts over 31 s; the server asks to wait 55 s"
        );
        let e = error(Ending::Permanent, 1, 0);
        assert_eq!(
            e.display_for("example.com").to_string(),
            "request to example.com failed, not retried: 1 attempt over 0 ms"
        );
        let e = error(
            Ending::QuotaExhausted {
                reset: Some(Duration::from_secs(7200)),
            },
            1,
            0,
        );
        assert_eq!(
            e.to_string(),
            "quota exhausted: 1 attempt over 0 ms; it resets in 2 h"
        );
    }

    #[test]
    fn source_is_the_last_error() {
        let e = error(Ending::Exhausted, 3, 2);
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("boom"));
        let timed = RetryError::<io::Error> {
            last: Some(AttemptError::TimedOut {
                after: Duration::from_secs(30),
            }),
            ..error(Ending::Exhausted, 3, 2)
        };
        assert_eq!(
            timed.source().map(|s| s.to_string()).as_deref(),
            Some("attempt timed out after 30 s")
        );
    }

    #[test]
    fn temporary_endings() {
        assert!(Ending::RateLimited { wait: None }.is_temporary());
        assert!(Ending::Exhausted.is_temporary());
        assert!(Ending::DeadlineExceeded.is_temporary());
        assert!(Ending::BudgetExhausted.is_temporary());
        assert!(Ending::QuotaExhausted { reset: None }.is_temporary());
        assert!(!Ending::Permanent.is_temporary());
        assert!(!Ending::Auth.is_temporary());
        assert!(!Ending::Cancelled.is_temporary());
    }
}
