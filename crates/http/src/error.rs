//! The errors of the HTTP layer.

use std::error::Error as StdError;
use std::fmt;

use backstop_core::{AttemptError, Ending, RetryError};

use crate::HttpFailure;

/// Why a request did not succeed.
#[derive(Debug)]
pub enum Error {
    /// The URL cannot be requested (malformed, or not http/https). Nothing
    /// was sent.
    InvalidUrl {
        /// The URL as given, with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A header name or value is malformed. Nothing was sent.
    InvalidHeader(String),
    /// The HTTP client could not be set up (TLS roots, for instance).
    Client(reqwest::Error),
    /// The request was tried and did not succeed; `source` says how it
    /// ended and carries the last attempt's [`HttpFailure`].
    Call {
        /// The host, as shown to people.
        host: String,
        /// How the retried call ended.
        source: Box<RetryError<HttpFailure>>,
    },
}

impl Error {
    /// How the retried call ended, when it was tried at all.
    pub fn ending(&self) -> Option<Ending> {
        match self {
            Error::Call { source, .. } => Some(source.ending),
            _ => None,
        }
    }

    /// The retry error, when the request was tried.
    pub fn retry_error(&self) -> Option<&RetryError<HttpFailure>> {
        match self {
            Error::Call { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether trying again later may succeed (exit code 75 rather than 1).
    pub fn is_temporary(&self) -> bool {
        self.ending().is_some_and(|e| e.is_temporary())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            Error::InvalidHeader(why) => write!(f, "invalid header: {why}"),
            Error::Client(_) => f.write_str("could not set up the HTTP client"),
            Error::Call { host, source } => source.display_for(host).fmt(f),
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Error::Client(e) => Some(e),
            // Skip the RetryError itself: this error's message already is
            // its message. Its source is the last attempt's failure.
            Error::Call { source, .. } => match source.last.as_ref()? {
                AttemptError::Failed(failure) => Some(failure),
                timed_out => Some(timed_out),
            },
            Error::InvalidUrl { .. } | Error::InvalidHeader(_) => None,
        }
    }
}
