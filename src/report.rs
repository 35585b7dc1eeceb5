//! How a command ends: one exit code for every command, and one clear
//! message on stderr for every failure.

use std::error::Error;
use std::fmt::Write as _;

use backstop_core::Ending;

/// The exit codes every command shares (documented in the README).
pub mod exit {
    /// It worked.
    pub const SUCCESS: u8 = 0;
    /// It failed, and trying again will not help.
    pub const FAILURE: u8 = 1;
    /// The command line was wrong.
    pub const USAGE: u8 = 2;
    /// It failed for now (rate limited, overloaded, transient failures
    /// exhausted): try later. `EX_TEMPFAIL` of sysexits.h.
    pub const TEMPFAIL: u8 = 75;
    /// Interrupted (Ctrl-C, SIGTERM).
    pub const INTERRUPTED: u8 = 130;
}

/// A failure as the user will read it.
#[derive(Debug)]
pub struct Report {
    /// The exit code.
    pub code: u8,
    message: String,
    causes: Vec<String>,
    details: Vec<String>,
    hint: Option<String>,
}

impl Report {
    /// A failure with a message of its own.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Report {
            code,
            message: message.into(),
            causes: Vec::new(),
            details: Vec::new(),
            hint: None,
        }
    }

    /// A failure described by an error and its chain of sources.
    pub fn from_error(code: u8, error: &(dyn Error + 'static)) -> Self {
        let mut report = Report::new(code, error.to_string());
        let mut source = error.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            let repeated = report.causes.last().unwrap_or(&report.message) == &text;
            if !repeated && !text.is_empty() {
                report.causes.push(text);
            }
            source = cause.source();
        }
        report
    }

    /// Adds a line of detail under the message.
    pub fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }

    /// Adds a line saying what the user can do.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The message and its causes on one line, for a warning.
    pub fn summary(&self) -> String {
        std::iter::once(self.message.as_str())
            .chain(self.causes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("; caused by: ")
    }

    /// The text printed on stderr.
    pub fn render(&self) -> String {
        let mut out = format!("backstop: error: {}\n", self.message);
        for cause in &self.causes {
            let _ = writeln!(out, "  caused by: {cause}");
        }
        for line in &self.details {
            let _ = writeln!(out, "  - {line}");
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  hint: {hint}");
        }
        out
    }
}

pub use backstop_core::plural;

/// The exit code for how a retried call ended.
pub fn code_for(ending: Ending) -> u8 {
    match ending {
        Ending::Cancelled => exit::INTERRUPTED,
        e if e.is_temporary() => exit::TEMPFAIL,
        _ => exit::FAILURE,
    }
}

impl From<backstop_http::Error> for Report {
    fn from(e: backstop_http::Error) -> Self {
        use backstop_http::Error as E;
        let code = match &e {
            E::InvalidUrl { .. } | E::InvalidHeader(_) => exit::USAGE,
            E::Client(_) => exit::FAILURE,
            E::Call { source, .. } => code_for(source.ending),
        };
        let report = Report::from_error(code, &e);
        match e.ending() {
            Some(Ending::Auth) => {
                report.hint("check the credentials sent (a token, an Authorization header)")
            }
            Some(Ending::Cancelled) => {
                report.hint("nothing was written; run the same command again to retry")
            }
            _ => report,
        }
    }
}

impl From<backstop_hub::Error> for Report {
    fn from(e: backstop_hub::Error) -> Self {
        match e {
            backstop_hub::Error::Http(http) => {
                let auth = http.ending() == Some(Ending::Auth);
                let report = Report::from(http);
                if auth {
                    report.hint("set HF_TOKEN to a token that can read this (https://huggingface.co/settings/tokens)")
                } else {
                    report
                }
            }
            invalid @ backstop_hub::Error::Invalid(_) => Report::from_error(exit::USAGE, &invalid),
            answer @ backstop_hub::Error::Answer(_) => Report::from_error(exit::FAILURE, &answer),
        }
    }
}

impl From<backstop_transfer::Error> for Report {
    fn from(e: backstop_transfer::Error) -> Self {
        use backstop_transfer::Error as E;
        match e {
            E::Hub(hub) => hub.into(),
            E::Request(http) => http.into(),
            e if e.is_usage() => Report::from_error(exit::USAGE, &e),
            e @ E::UnsafeName { .. } => Report::from_error(exit::FAILURE, &e)
                .hint("nothing was written; the listing names a file outside the destination"),
            e => Report::from_error(exit::FAILURE, &e),
        }
    }
}

impl From<backstop_transfer::FileError> for Report {
    /// One file that did not arrive, as `get` reports it: the same words
    /// and exit codes as a call of the HTTP client.
    fn from(e: backstop_transfer::FileError) -> Self {
        use backstop_transfer::FileError as E;
        let code = match &e {
            E::Request(_) => exit::USAGE,
            E::Transfer { source, .. } => code_for(source.ending),
            e if e.is_temporary() => exit::TEMPFAIL,
            _ => exit::FAILURE,
        };
        let report = Report::from_error(code, &e);
        match e.ending() {
            Some(Ending::Auth) => {
                report.hint("check the credentials sent (a token, an Authorization header)")
            }
            _ => report,
        }
    }
}

/// Every store's error, the ledger's and the queue's: a refused request or
/// a broken store is a failure, a location that cannot be read a usage
/// error, a busy or unreachable store temporary.
impl<R: std::error::Error + Send + Sync + 'static> From<backstop_store::StoreError<R>> for Report {
    fn from(e: backstop_store::StoreError<R>) -> Self {
        use backstop_store::StoreError as E;
        let code = match &e {
            E::Location { .. } => exit::USAGE,
            e if e.is_temporary() => exit::TEMPFAIL,
            _ => exit::FAILURE,
        };
        let report = Report::from_error(code, &e);
        match &e {
            E::Busy { .. } => report.hint("other backstop processes are writing to it; try again"),
            E::Open { .. } => {
                report.hint("check --state / BACKSTOP_STATE, and that the database is up")
            }
            E::Unusable { .. } => report.hint(
                "check --state / BACKSTOP_STATE: it must be a file backstop can create and write",
            ),
            _ => report,
        }
    }
}

impl From<backstop_ledger::Error> for Report {
    fn from(e: backstop_ledger::Error) -> Self {
        match e {
            backstop_ledger::Error::Store(store) => store.into(),
            invalid @ backstop_ledger::Error::Invalid(_) => {
                Report::from_error(exit::USAGE, &invalid)
            }
        }
    }
}

impl From<backstop_queue::CoordinatorError> for Report {
    fn from(e: backstop_queue::CoordinatorError) -> Self {
        use backstop_queue::CoordinatorError as E;
        if let E::Open(store) = e {
            return store.into();
        }
        let report = Report::from_error(exit::FAILURE, &e);
        match &e {
            E::Listen { .. } => report.hint(
                "another `backstop serve` may be running; pick another address (--listen, --metrics-listen)",
            ),
            E::Running { .. } => Report {
                code: exit::USAGE,
                ..report.hint("stop that `backstop serve` first, or give this one other nodes")
            },
            E::StartUp(store) if store.is_temporary() => Report {
                code: exit::TEMPFAIL,
                ..report
            },
            _ => report,
        }
    }
}

impl From<backstop_queue::transport::nats::protocol::NatsError> for Report {
    fn from(e: backstop_queue::transport::nats::protocol::NatsError) -> Self {
        use backstop_queue::transport::nats::protocol::NatsError as E;
        match &e {
            E::Connect { .. } => Report::from_error(exit::TEMPFAIL, &e)
                .hint("check that the NATS server is up and the URL is right"),
            E::Url { .. } | E::Credentials { .. } | E::TwoCredentials { .. } | E::Tls { .. } => {
                Report::from_error(exit::USAGE, &e)
            }
            E::Refused { .. } => Report::from_error(exit::FAILURE, &e).hint(
                "check the NATS credentials (--nats-user, --nats-token-file, --nats-nkey-file, \
                 --nats-creds) and TLS (--nats-ca-file, --nats-cert)",
            ),
            E::Prefix(_) => Report::from_error(exit::USAGE, &e),
            E::Subscribe { .. } => Report::from_error(exit::TEMPFAIL, &e),
        }
    }
}

impl From<backstop_queue::config::ConfigError> for Report {
    fn from(e: backstop_queue::config::ConfigError) -> Self {
        Report::from_error(exit::USAGE, &e)
    }
}

impl From<backstop_queue::program::Unrunnable> for Report {
    fn from(e: backstop_queue::program::Unrunnable) -> Self {
        Report::from_error(exit::USAGE, &e)
            .hint("fix the command, or install the program, before starting")
    }
}

impl From<backstop_queue::Invalid> for Report {
    fn from(e: backstop_queue::Invalid) -> Self {
        Report::from_error(exit::USAGE, &e)
    }
}

impl From<backstop_oci::Error> for Report {
    fn from(e: backstop_oci::Error) -> Self {
        use backstop_oci::Error as E;
        let code = match &e {
            E::Reference(_) | E::Artifact(_) | E::Invalid(_) => exit::USAGE,
            E::Client(http) if http.ending().is_none() => exit::FAILURE,
            other => other.ending().map_or(exit::FAILURE, code_for),
        };
        Report::from_error(code, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn renders_the_chain_once() {
        let e = Layer(
            "top",
            Some(Box::new(Layer(
                "middle",
                Some(Box::new(Layer("middle", None))),
            ))),
        );
        let r = Report::from_error(exit::FAILURE, &e).hint("do this");
        assert_eq!(
            r.render(),
            "backstop: error: top\n  caused by: middle\n  hint: do this\n"
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(plural(0, "file", "files"), "0 files");
        assert_eq!(plural(1, "file", "files"), "1 file");
        assert_eq!(plural(1, "delivery", "deliveries"), "1 delivery");
        assert_eq!(plural(2, "delivery", "deliveries"), "2 deliveries");
    }

    #[test]
    fn endings_map_to_exit_codes() {
        assert_eq!(code_for(Ending::RateLimited { wait: None }), 75);
        assert_eq!(code_for(Ending::Exhausted), 75);
        assert_eq!(code_for(Ending::DeadlineExceeded), 75);
        assert_eq!(code_for(Ending::Permanent), 1);
        assert_eq!(code_for(Ending::Auth), 1);
        assert_eq!(code_for(Ending::Cancelled), 130);
    }
}
