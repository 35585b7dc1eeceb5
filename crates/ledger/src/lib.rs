//! backstop's cooldown ledger: which provider and model keys are cooling
//! down, why, and until when — remembered across processes, machines and
//! restarts, so that scripts pick an available model and fall back when one
//! is rate limited.
//!
//! - Keys are `provider/model` and `provider` ([`Key`]). A rate limit, an
//!   overload or a provider error cools the model; an exhausted quota or an
//!   auth failure cools the provider ([`Reason::scope`]). A model is
//!   available when neither its key nor its provider's is cooling.
//! - Deadlines only lengthen; the server's or tool's own wait is used when
//!   given (at most the reason's cap), else an escalating default
//!   ([`Durations`]) that decays with successes.
//! - Nothing stored can break a reader: a row with a value out of range,
//!   of the wrong type or from a newer version is clamped or shown as
//!   best it can be, never a panic; no cooldown lasts longer than
//!   [`MAX_COOLDOWN`].
//! - An auth cooldown remembers the fingerprint of the refused credential
//!   and ends as soon as the credential in use changes ([`Credentials`]).
//! - Hosts cool too (`host:huggingface.co`, [`Key::host`]): a server's 429
//!   or 503 recorded by one process holds every process that reads the
//!   ledger, through the HTTP client's seam ([`HostLedger`]).
//! - Stored in SQLite by default, or PostgreSQL for many machines
//!   ([`store`]); both pass one conformance suite.
//!
//! ```
//! use backstop_ledger::{LedgerFailure, Ledger, Reason, SqliteStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let ledger = Ledger::new(Box::new(SqliteStore::open(dir.path().join("ledger.db")).unwrap()));
//! let model = "anthropic/claude-sonnet-4-5".parse().unwrap();
//! let entry = ledger.record(&model, &LedgerFailure::new(Reason::RateLimit)).unwrap();
//! assert_eq!(entry.key, model);
//! assert!(ledger.pick(&[model]).unwrap().available.is_none());
//! ```

#![forbid(unsafe_code)]

mod credentials;
mod durations;
mod entry;
mod hosts;
mod key;
mod ledger;
mod reason;
pub mod store;

pub use credentials::{Credentials, LocalCredentials, StaticCredentials};
pub use durations::{Defaults, Durations, MAX_COOLDOWN};
pub use entry::{Entry, State};
pub use hosts::HostLedger;
pub use key::{Key, KeyError, Scope};
pub use ledger::{Error, Ledger, LedgerFailure, Pick, Set, deadline, remaining};
pub use reason::{Reason, Source, UnknownReason};
pub use store::{PostgresStore, SqliteStore, Store, StoreError};
