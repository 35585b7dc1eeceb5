//! Typed classification of failures: what kind of failure an error is, and
//! what the engine should do about it. Never decided by matching substrings
//! of error messages.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

/// What kind of failure one attempt ended with.
///
/// Waits and resets are measured from the moment the failure was
/// classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Worth another attempt after a computed backoff: a dropped connection,
    /// a timeout, a 502.
    Transient,
    /// The caller is sending too fast (HTTP 429). `wait` is how long the
    /// server asked for, when it said.
    RateLimited {
        /// The server's requested wait.
        wait: Option<Duration>,
    },
    /// The server as a whole is struggling (HTTP 503, Anthropic's 529); not
    /// the caller's quota.
    Overloaded {
        /// The server's requested wait.
        wait: Option<Duration>,
    },
    /// A quota that will not come back within one call (a daily or monthly
    /// allowance, HTTP 402). Ends the call at once.
    QuotaExhausted {
        /// When the quota resets, when known.
        reset: Option<Duration>,
    },
    /// The credentials were refused (HTTP 401/403). Ends the call at once.
    Auth,
    /// Retrying cannot help (HTTP 404, a malformed request, a full disk).
    /// Ends the call at once.
    Permanent,
}

impl Class {
    /// The server-requested wait that comes with this class, if any.
    pub fn server_wait(&self) -> Option<Duration> {
        match *self {
            Class::RateLimited { wait } | Class::Overloaded { wait } => wait,
            Class::QuotaExhausted { reset } => reset,
            Class::Transient | Class::Auth | Class::Permanent => None,
        }
    }

    /// Whether the engine may try again after this failure.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Class::Transient | Class::RateLimited { .. } | Class::Overloaded { .. }
        )
    }
}

/// A classification and a short reason for humans ("HTTP 503",
/// "connection reset", "attempt timeout"), shown by retry hooks and
/// progress bars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// What kind of failure it was.
    pub class: Class,
    /// A few words on what happened; never a secret.
    pub reason: Cow<'static, str>,
}

impl Verdict {
    /// A verdict of any class.
    pub fn new(class: Class, reason: impl Into<Cow<'static, str>>) -> Self {
        Verdict {
            class,
            reason: reason.into(),
        }
    }
    /// A [`Class::Transient`] verdict.
    pub fn transient(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Class::Transient, reason)
    }
    /// A [`Class::Permanent`] verdict.
    pub fn permanent(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Class::Permanent, reason)
    }
}

/// Decides what a failure is. Implemented for every `Fn(&E) -> Verdict`, so
/// a closure is a classifier.
pub trait Classify<E: ?Sized> {
    /// Classifies one attempt's error.
    fn classify(&self, error: &E) -> Verdict;
}

impl<E: ?Sized, F: Fn(&E) -> Verdict> Classify<E> for F {
    fn classify(&self, error: &E) -> Verdict {
        self(error)
    }
}

/// An error that knows its own class. The engine's default classifier
/// ([`ByType`]) uses it.
pub trait Classified {
    /// This error's verdict.
    fn verdict(&self) -> Verdict;
}

/// The default classifier: asks the error itself through [`Classified`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ByType;

impl<E: Classified + ?Sized> Classify<E> for ByType {
    fn classify(&self, error: &E) -> Verdict {
        error.verdict()
    }
}

impl Classified for io::Error {
    fn verdict(&self) -> Verdict {
        classify_io_kind(self.kind())
    }
}

/// The class of an [`io::ErrorKind`].
///
/// Network hiccups (reset, refused, aborted, timed out, unexpected EOF,
/// unreachable) are transient. Everything else, including kinds this
/// function does not know, is permanent: a full disk or a permission
/// problem retried for an hour only hides the cause.
pub fn classify_io_kind(kind: io::ErrorKind) -> Verdict {
    use io::ErrorKind as K;
    let transient = |reason: &'static str| Verdict::transient(reason);
    match kind {
        K::ConnectionReset => transient("connection reset"),
        K::ConnectionAborted => transient("connection aborted"),
        K::ConnectionRefused => transient("connection refused"),
        K::NotConnected => transient("not connected"),
        K::BrokenPipe => transient("broken pipe"),
        K::TimedOut => transient("timed out"),
        K::WouldBlock => transient("would block"),
        K::Interrupted => transient("interrupted"),
        K::UnexpectedEof => transient("unexpected end of stream"),
        K::HostUnreachable => transient("host unreachable"),
        K::NetworkUnreachable => transient("network unreachable"),
        K::NetworkDown => transient("network down"),
        K::AddrNotAvailable => transient("address not available"),
        K::ResourceBusy => transient("resource busy"),
        K::PermissionDenied => Verdict::permanent("permission denied"),
        K::NotFound => Verdict::permanent("not found"),
        K::StorageFull => Verdict::permanent("no space left"),
        K::ReadOnlyFilesystem => Verdict::permanent("read-only file system"),
        K::InvalidData => Verdict::permanent("invalid data"),
        K::InvalidInput => Verdict::permanent("invalid input"),
        _ => Verdict::permanent("I/O error"),
    }
}

/// The class of an HTTP status code that is not a success. `wait` is the
/// server's requested wait read from the response's headers.
///
/// - 429 → rate limited; 503 and 529 → overloaded (with the wait);
/// - 408, 425, 500, 502, 504 → transient;
/// - 401, 403 → auth; 402 → quota exhausted (with the wait as its reset);
/// - every other status → permanent (other 4xx fail at once, and so do
///   501, 505 and the like, which no retry will fix).
///
/// ```
/// use std::time::Duration;
/// use backstop_core::{Class, classify_status};
///
/// let v = classify_status(429, Some(Duration::from_secs(7)));
/// assert_eq!(v.class, Class::RateLimited { wait: Some(Duration::from_secs(7)) });
/// assert_eq!(v.reason, "HTTP 429");
/// assert_eq!(classify_status(404, None).class, Class::Permanent);
/// ```
pub fn classify_status(status: u16, wait: Option<Duration>) -> Verdict {
    let class = match status {
        429 => Class::RateLimited { wait },
        503 | 529 => Class::Overloaded { wait },
        408 | 425 | 500 | 502 | 504 => Class::Transient,
        401 | 403 => Class::Auth,
        402 => Class::QuotaExhausted { reset: wait },
        _ => Class::Permanent,
    };
    Verdict::new(class, status_reason(status))
}

fn status_reason(status: u16) -> Cow<'static, str> {
    let known = match status {
        408 => "HTTP 408",
        425 => "HTTP 425",
        429 => "HTTP 429",
        500 => "HTTP 500",
        502 => "HTTP 502",
        503 => "HTTP 503",
        504 => "HTTP 504",
        529 => "HTTP 529",
        _ => return Cow::Owned(format!("HTTP {status}")),
    };
    Cow::Borrowed(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let s = Some(Duration::from_secs(3));
        let cases = [
            (408, Class::Transient),
            (425, Class::Transient),
            (429, Class::RateLimited { wait: s }),
            (500, Class::Transient),
            (502, Class::Transient),
            (503, Class::Overloaded { wait: s }),
            (504, Class::Transient),
            (529, Class::Overloaded { wait: s }),
            (401, Class::Auth),
            (403, Class::Auth),
            (402, Class::QuotaExhausted { reset: s }),
            (400, Class::Permanent),
            (404, Class::Permanent),
            (422, Class::Permanent),
            (501, Class::Permanent),
            (505, Class::Permanent),
            (511, Class::Permanent),
        ];
        for (status, class) in cases {
            let v = classify_status(status, s);
            assert_eq!(v.class, class, "status {status}");
            assert_eq!(v.reason, format!("HTTP {status}"));
        }
    }

    #[test]
    fn io_kinds() {
        use io::ErrorKind as K;
        for kind in [
            K::ConnectionReset,
            K::ConnectionRefused,
            K::TimedOut,
            K::UnexpectedEof,
            K::BrokenPipe,
        ] {
            assert_eq!(classify_io_kind(kind).class, Class::Transient, "{kind:?}");
        }
        for kind in [
            K::PermissionDenied,
            K::NotFound,
            K::StorageFull,
            K::InvalidData,
            K::Other,
        ] {
            assert_eq!(classify_io_kind(kind).class, Class::Permanent, "{kind:?}");
        }
        let e = io::Error::new(K::ConnectionReset, "peer reset");
        assert_eq!(ByType.classify(&e).reason, "connection reset");
    }

    #[test]
    fn closures_are_classifiers() {
        let c = |e: &u16| classify_status(*e, None);
        assert_eq!(c.classify(&401).class, Class::Auth);
    }
}
