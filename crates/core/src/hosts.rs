//! Hosts that asked to be left alone, shared beyond one process: the seam
//! between the HTTP client, which consults it before each request and
//! tells it what servers answered, and the cooldown ledger, which keeps it
//! for every process of a machine or a fleet.
//!
//! A host is named as people see it, `huggingface.co` or
//! `127.0.0.1:8080`: the name alone on the scheme's default port (so http
//! and https on 80 and 443 share one entry), with `:PORT` otherwise.

use std::error::Error;
use std::time::SystemTime;

/// What made a host ask to be left alone: its answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRefusal {
    /// The status: 429, 503 or 529.
    pub status: u16,
    /// The body says a quota is used up (OpenAI's `insufficient_quota`).
    pub quota: bool,
    /// Until when the host asked to be left alone (millisecond precision,
    /// rounded up: never a moment early).
    pub until: SystemTime,
    /// Whether the wait came from the body (Google's `RetryInfo`) rather
    /// than a header (`Retry-After` and friends, a quota reset).
    pub from_body: bool,
    /// What the host said, short, with the request's credentials removed.
    pub message: String,
}

/// A store of hosts' cooldowns shared by many processes.
///
/// Every call may block for a database round trip (a SQLite file, a
/// PostgreSQL server): an async caller runs it where blocking is allowed
/// (`tokio::task::spawn_blocking`). A call that fails changes nothing the
/// caller relies on: the caller goes on as if the store were empty.
pub trait HostCooldowns: Send + Sync {
    /// When `host`'s stored cooldown ends — in the past too, while the
    /// entry is still there — or `None` when nothing is stored for it.
    /// Meant to be one indexed read.
    fn until(&self, host: &str) -> Result<Option<SystemTime>, HostsError>;

    /// Cools `host` until `refusal.until`, unless a longer cooldown is
    /// stored (it is kept: a later, shorter wait never shortens a live
    /// one). Returns when the stored cooldown ends now.
    fn cool(&self, host: &str, refusal: &HostRefusal) -> Result<SystemTime, HostsError>;

    /// `host` answered a request sent after its cooldown, which ended at
    /// `seen`: forgets the entry if it still ends no later than that (a
    /// later one was written since, by another process, and stays).
    /// Returns whether an entry was forgotten.
    fn clear(&self, host: &str, seen: SystemTime) -> Result<bool, HostsError>;
}

/// Why a [`HostCooldowns`] call failed; its message names the store.
pub type HostsError = Box<dyn Error + Send + Sync>;
