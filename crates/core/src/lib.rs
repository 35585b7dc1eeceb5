//! backstop's retry engine. No I/O: everything that talks to a network, a
//! disk or a database builds on this crate.
//!
//! - [`Policy`]: attempts, full-jitter backoff, per-attempt timeout, overall
//!   deadline, the longest server wait honoured; presets [`Policy::api`] and
//!   [`Policy::transfer`].
//! - [`Class`] and [`Classify`]: typed classification of failures, with
//!   defaults for [`std::io::Error`] and HTTP status codes.
//! - [`Retry`]: runs an operation under a policy and ends with a
//!   [`RetryError`] whose [`Ending`] says how it ended. [`Policy::retry`]
//!   borrows the policy; [`Policy::into_retry`] owns it, for a future to
//!   return from a function or spawn.
//! - [`RetryBudget`]: a lock-free token bucket shared by many calls.
//! - [`wait`]: parsers for Retry-After and the other values servers use to say how long to wait.
//! - [`hosts`]: the seam through which processes share the waits hosts
//!   asked for ([`hosts::HostCooldowns`]).
//! - [`StateLocation`]: where a store lives (a SQLite path or a PostgreSQL
//!   URL), parsed once for every store.
//!
//! ```
//! use std::io;
//! use backstop_core::{Ending, Policy};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let err = Policy::api()
//!     .retry(|_| async { Err::<(), _>(io::Error::from(io::ErrorKind::ConnectionReset)) })
//!     .run()
//!     .await
//!     .unwrap_err();
//! assert_eq!(err.ending, Ending::Exhausted);
//! assert_eq!(err.attempts, 5);
//! # }
//! ```

#![forbid(unsafe_code)]

mod budget;
mod classify;
pub mod clock;
mod error;
pub mod hosts;
mod human;
mod location;
mod policy;
mod redact;
mod retry;
mod secret;
pub mod time;
pub mod wait;

pub use budget::RetryBudget;
pub use classify::{
    ByType, Class, Classified, Classify, Verdict, classify_io_kind, classify_status,
};
pub use error::{AttemptError, Ending, RetryError};
pub use human::{HumanDuration, plural, with_causes};
pub use location::{KNOWN_FORMS, LocationError, StateLocation};
pub use policy::{
    Delays, Jitter, Policy, TRANSFER_FLOOR_BYTES_PER_SEC, TRANSFER_MAX_ATTEMPT,
    TRANSFER_MIN_ATTEMPT,
};
pub use redact::redact;
pub use retry::{Attempt, Guard, Guards, Notify, Retry, RetryEvent, Unguarded};
pub use secret::{Secret, fingerprint};
