//! The errors of talking to a registry.

use std::fmt;
use std::io;
use std::path::PathBuf;

use backstop_core::{AttemptError, Class, Classified, RetryError, Verdict};
use backstop_http::HttpFailure;

use crate::{ArtifactError, CredentialsError, ReferenceError};

/// What one attempt at a registry failed with, and how the retry engine
/// treats it ([`Classified`]).
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The request failed or the registry refused it.
    #[error(transparent)]
    Http(#[from] HttpFailure),
    /// The token service named by the registry's `WWW-Authenticate` did
    /// not give a token.
    #[error("the registry's token service gave no token")]
    Token(#[source] backstop_http::Error),
    /// The upload session is no longer there (expired, or broken by a torn
    /// chunk): the next attempt starts a new one.
    #[error("the upload session is gone ({0})")]
    SessionGone(String),
    /// The registry refused a request body as too large (413; GHCR caps a
    /// `PATCH` at 4 MiB): the next attempt sends smaller chunks.
    #[error("the registry refused a {0}-byte request as too large")]
    ChunkTooLarge(u64),
    /// The blob moved less than the minimum progress in its window
    /// ([`TransferFailure::TooSlow`](backstop_transfer::TransferFailure::TooSlow)).
    #[error(transparent)]
    TooSlow(backstop_transfer::TransferFailure),
    /// The registry answered something the protocol does not allow.
    #[error("unexpected answer: {0}")]
    Protocol(String),
    /// The registry refused the blob's digest: what was sent is not the
    /// file (it changed while being pushed).
    #[error("the registry refused the digest ({0})")]
    DigestRefused(String),
    /// Reading the local file failed.
    #[error("cannot read {}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl Classified for Fault {
    fn verdict(&self) -> Verdict {
        match self {
            // Every upload request is made safe to repeat by asking the
            // session where it stands first, so a cut PATCH is retried.
            Fault::Http(f) => f.verdict(),
            Fault::Token(e) => match e.ending() {
                Some(backstop_core::Ending::Auth) => Verdict::new(Class::Auth, "token refused"),
                _ if e.is_temporary() => Verdict::transient("token service failed"),
                _ => Verdict::permanent("token service failed"),
            },
            Fault::SessionGone(_) => Verdict::transient("upload session gone"),
            Fault::ChunkTooLarge(_) => Verdict::transient("chunk too large"),
            Fault::TooSlow(f) => f.verdict(),
            Fault::Protocol(_) => Verdict::permanent("unexpected answer"),
            Fault::DigestRefused(_) => Verdict::permanent("digest refused"),
            Fault::Local { .. } => Verdict::permanent("reading the file"),
        }
    }
}

/// Why a push (or a part of it) did not succeed.
#[derive(Debug)]
pub enum Error {
    /// The reference is malformed.
    Reference(ReferenceError),
    /// A credentials file cannot be read or written.
    Credentials(CredentialsError),
    /// The artifact cannot be built from the files given.
    Artifact(ArtifactError),
    /// Calls to the registry were retried and did not succeed; the
    /// source is the last attempt's fault.
    Registry {
        /// The registry, as shown to people.
        host: String,
        /// How the retried call ended, with the last attempt's fault.
        source: Box<RetryError<Fault>>,
    },
    /// Not tried: the registry refused the credentials for another blob
    /// of the same push.
    Stopped {
        /// The registry.
        host: String,
    },
    /// A manifest cannot be pulled as it is.
    Manifest {
        /// The source, as shown (`oci://…`).
        source_name: String,
        /// What is wrong with it.
        error: crate::ManifestError,
    },
    /// A request could not even be made (a registry address or a
    /// `Location` that is not a URL). Nothing was sent.
    Invalid(Fault),
    /// The HTTP client could not be set up.
    Client(backstop_http::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Reference(e) => e.fmt(f),
            Error::Credentials(e) => e.fmt(f),
            Error::Artifact(e) => e.fmt(f),
            Error::Registry { host, source } => source.display_for(host).fmt(f),
            Error::Stopped { host } => {
                write!(
                    f,
                    "not pushed: {host} refused the credentials for another blob"
                )
            }
            Error::Invalid(_) => f.write_str("cannot make the request"),
            Error::Manifest { source_name, error } => write!(f, "{source_name}: {error}"),
            Error::Client(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Reference(e) => e.source(),
            Error::Credentials(e) => e.source(),
            Error::Artifact(e) => e.source(),
            // Skip the RetryError: this error's message already is its
            // message.
            Error::Registry { source, .. } => match source.last.as_ref()? {
                AttemptError::Failed(fault) => Some(fault),
                timed_out => Some(timed_out),
            },
            Error::Stopped { .. } => None,
            Error::Invalid(fault) => Some(fault),
            Error::Manifest { .. } => None,
            Error::Client(e) => e.source(),
        }
    }
}

impl From<ReferenceError> for Error {
    fn from(e: ReferenceError) -> Self {
        Error::Reference(e)
    }
}

impl From<CredentialsError> for Error {
    fn from(e: CredentialsError) -> Self {
        Error::Credentials(e)
    }
}

impl From<ArtifactError> for Error {
    fn from(e: ArtifactError) -> Self {
        Error::Artifact(e)
    }
}

impl From<backstop_http::Error> for Error {
    fn from(e: backstop_http::Error) -> Self {
        Error::Client(e)
    }
}

impl Error {
    /// How the retried calls ended, when they were tried.
    pub fn ending(&self) -> Option<backstop_core::Ending> {
        match self {
            Error::Registry { source, .. } => Some(source.ending),
            Error::Stopped { .. } => Some(backstop_core::Ending::Auth),
            Error::Client(e) => e.ending(),
            _ => None,
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        self.ending().is_some_and(|e| e.is_temporary())
    }
}
