//! What can go wrong: before a pull starts ([`Error`]), for one file
//! ([`FileError`]), and in one attempt of one stream ([`TransferFailure`]).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use backstop_core::{AttemptError, Class, Classified, HumanDuration, RetryError, Verdict};

use crate::{Sha256, UnsafeName};

/// Why a pull cannot start. Nothing has been downloaded or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source is not an http(s) URL or an `hf://` name.
    #[error("{input:?} is not a source: {reason}")]
    InvalidSource {
        /// The source as given (control characters dropped).
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The Hub could not list a repository, or refused a name.
    #[error(transparent)]
    Hub(#[from] backstop_hub::Error),
    /// A pattern picked no file of a repository.
    #[error("no file of {repo} matches {pattern:?} ({listed} files listed)")]
    NoMatch {
        /// `ORG/NAME`.
        repo: String,
        /// The pattern.
        pattern: String,
        /// How many files the repository has.
        listed: usize,
    },
    /// A listing or a URL names a file that cannot be written under the
    /// destination.
    #[error("{origin} names a file {name:?} that cannot be written safely: {reason}")]
    UnsafeName {
        /// Where the name comes from (a repository, a URL).
        origin: String,
        /// The name as sent.
        name: String,
        /// Why it is refused.
        reason: UnsafeName,
    },
    /// A listing gives a file a sha256 that is not one.
    #[error("{origin} lists {name:?} with a sha256 that is not one")]
    InvalidDigest {
        /// The repository.
        origin: String,
        /// The file.
        name: String,
    },
    /// Two sources would write the same file.
    #[error("{first} and {second} would both be written to {}", path.display())]
    Collision {
        /// The path.
        path: PathBuf,
        /// The first source.
        first: String,
        /// The second.
        second: String,
    },
    /// A request cannot be built (a malformed header).
    #[error(transparent)]
    Request(backstop_http::Error),
    /// A source that is not a Hub repository was to go to the Hugging
    /// Face cache.
    #[error(
        "{origin} is not a file of a Hub repository: only hf:// sources go to the Hugging Face cache"
    )]
    NotForCache {
        /// The source.
        origin: String,
    },
    /// A listing does not say what the Hugging Face cache names a file
    /// by: the commit of its snapshot, or the ETag of its blob.
    #[error(
        "{origin} lists {name:?} without {missing}, which names it in the Hugging Face cache; pull it with --dir instead"
    )]
    Unnamed {
        /// The repository.
        origin: String,
        /// The file.
        name: String,
        /// "the commit of the revision", "a blob id or sha256".
        missing: &'static str,
    },
    /// `--sha256` values do not pair up with the URLs.
    #[error(
        "{digests} sha256 {} for {urls} {}: give one per URL, in order, or none",
        if *digests == 1 { "digest" } else { "digests" },
        if *urls == 1 { "URL" } else { "URLs" }
    )]
    DigestCount {
        /// Digests given.
        digests: usize,
        /// URL sources given.
        urls: usize,
    },
    /// Two digests are given for one file (`--sha256sums` and a list's
    /// `sha256=`, or the Hub's own), and they differ.
    #[error("{name:?} is given two different sha256 digests: {first} and {second}")]
    DigestConflict {
        /// The file, under the destination.
        name: String,
        /// One digest.
        first: Sha256,
        /// The other.
        second: Sha256,
    },
    /// `--sha256sums` has no line for a file that has no digest of its
    /// own to be checked against.
    #[error("the sha256 list has no line for {name:?} (from {origin})")]
    NotListed {
        /// The file, under the destination.
        name: String,
        /// Where it comes from.
        origin: String,
    },
}

impl Error {
    /// Whether the command line itself is wrong (exit code 2), rather
    /// than what a server sent.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidSource { .. }
                | Error::DigestCount { .. }
                | Error::DigestConflict { .. }
                | Error::NotListed { .. }
                | Error::Collision { .. }
                | Error::Request(_)
                | Error::NotForCache { .. }
        )
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Hub(e) => e.is_temporary(),
            _ => false,
        }
    }
}

/// Why one file of a pull did not arrive. The partial file is kept unless
/// its bytes are known to be wrong, so that the same command resumes it.
#[derive(Debug)]
pub enum FileError {
    /// The transfer was retried and did not succeed.
    Transfer {
        /// The host asked, as shown to people.
        host: String,
        /// How the retried transfer ended, with the last attempt's failure.
        source: Box<RetryError<TransferFailure>>,
    },
    /// All bytes arrived, and they are not the file expected.
    Digest {
        /// The digest expected.
        expected: Sha256,
        /// The digest of what arrived.
        actual: Sha256,
        /// The same wrong bytes arrived twice: the expected digest is
        /// wrong or the file changed, and another try will not help.
        repeated: bool,
    },
    /// The partial file or the destination cannot be written.
    Local {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Not finished: the server refused the credentials for other files
    /// it speaks for (another file of the same Hub repository, or two
    /// URLs of the same origin in a row), and would refuse them for this
    /// one.
    Stopped {
        /// The host.
        host: String,
        /// The Hub repository, when the file is one of its.
        repo: Option<String>,
    },
    /// The request cannot be made (a malformed header). Nothing was sent.
    Request(backstop_http::Error),
}

impl FileError {
    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        match self {
            FileError::Transfer { source, .. } => source.ending.is_temporary(),
            FileError::Digest { repeated, .. } => !repeated,
            FileError::Local { .. } | FileError::Stopped { .. } | FileError::Request(_) => false,
        }
    }

    /// How the retried transfer ended, when it was one.
    pub fn ending(&self) -> Option<backstop_core::Ending> {
        match self {
            FileError::Transfer { source, .. } => Some(source.ending),
            _ => None,
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::Transfer { host, source } => source.display_for(host).fmt(f),
            FileError::Digest {
                expected,
                actual,
                repeated,
            } => {
                write!(f, "sha256 mismatch: got {actual}, expected {expected}")?;
                if *repeated {
                    f.write_str(" (the same bytes arrived twice)")?;
                }
                Ok(())
            }
            FileError::Local { path, .. } => write!(f, "cannot write {}", path.display()),
            FileError::Stopped {
                host,
                repo: Some(repo),
            } => write!(
                f,
                "stopped: {host} refused the credentials for another file of {repo}"
            ),
            FileError::Stopped { host, repo: None } => write!(
                f,
                "stopped: {host} refused the credentials for two other files in a row"
            ),
            FileError::Request(e) => e.fmt(f),
        }
    }
}

impl StdError for FileError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            // The message already is the RetryError's; go on to the last
            // attempt's failure.
            FileError::Transfer { source, .. } => match source.last.as_ref()? {
                AttemptError::Failed(failure) => Some(failure),
                timed_out => Some(timed_out),
            },
            FileError::Local { source, .. } => Some(source),
            FileError::Request(e) => e.source(),
            FileError::Digest { .. } | FileError::Stopped { .. } => None,
        }
    }
}

/// What one attempt of one stream failed with.
#[derive(Debug)]
pub enum TransferFailure {
    /// The request failed: a status, the connection, a timeout.
    Http(backstop_http::HttpFailure),
    /// The answer cannot be used (a garbage `Content-Range`, a 206 for
    /// bytes not asked for).
    Answer(String),
    /// Fewer bytes than the minimum-progress window asks for arrived in
    /// it, over however many connections.
    TooSlow {
        /// Bytes that arrived in the window.
        bytes: u64,
        /// The window.
        window: Duration,
    },
    /// The server's file is not the size the listing gives.
    Size {
        /// The size the server gives.
        server: u64,
        /// The size expected.
        expected: u64,
    },
    /// The server does not serve the ranges that several streams need;
    /// the file falls back to one stream.
    RangeUnusable(String),
    /// The body ended early without an error and without a byte.
    Short,
    /// Writing the partial file failed.
    Local(io::Error),
    /// The file's [`Authorizer`](crate::Authorizer) gave no
    /// `Authorization` for the request (a token service that failed).
    Authorization(String),
}

impl Classified for TransferFailure {
    fn verdict(&self) -> Verdict {
        match self {
            TransferFailure::Http(f) => f.verdict(),
            TransferFailure::Answer(_) => Verdict::transient("unusable answer"),
            TransferFailure::TooSlow { .. } => Verdict::transient("too slow"),
            TransferFailure::Short => Verdict::transient("body cut short"),
            TransferFailure::Size { .. } => Verdict::permanent("size mismatch"),
            TransferFailure::RangeUnusable(_) => Verdict::permanent("Range not served"),
            TransferFailure::Local(e) => {
                Verdict::new(Class::Permanent, format!("writing: {}", e.kind()))
            }
            TransferFailure::Authorization(_) => Verdict::transient("no credentials"),
        }
    }
}

impl fmt::Display for TransferFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferFailure::Http(e) => e.fmt(f),
            TransferFailure::Answer(why) => write!(f, "the server's answer cannot be used: {why}"),
            TransferFailure::TooSlow { bytes, window } => {
                let unit = if *bytes == 1 { "byte" } else { "bytes" };
                write!(
                    f,
                    "below the minimum progress: only {bytes} {unit} arrived in {}",
                    HumanDuration(*window)
                )
            }
            TransferFailure::Size { server, expected } => write!(
                f,
                "the server's copy is {server} bytes, {expected} expected"
            ),
            TransferFailure::RangeUnusable(why) => {
                write!(f, "Range requests are not served: {why}")
            }
            TransferFailure::Short => f.write_str("the body ended before its end"),
            TransferFailure::Local(e) => write!(f, "writing the partial file failed: {e}"),
            TransferFailure::Authorization(why) => {
                write!(f, "cannot get the credentials to send: {why}")
            }
        }
    }
}

impl StdError for TransferFailure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            TransferFailure::Http(e) => e.source(),
            TransferFailure::Local(e) => Some(e),
            _ => None,
        }
    }
}
