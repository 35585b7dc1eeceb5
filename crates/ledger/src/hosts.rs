//! The ledger as the store the HTTP client shares hosts' cooldowns
//! through: a 429 or 503 one process got holds every process that reads
//! the same ledger, on one machine (SQLite) or a fleet (PostgreSQL).

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use backstop_core::StateLocation;
use backstop_core::hosts::{HostCooldowns, HostRefusal, HostsError};

use crate::{Key, Ledger, LedgerFailure, Reason, Source};

/// The ledger at a state location, as a
/// [`HostCooldowns`](backstop_core::hosts::HostCooldowns) store: host `H`
/// is the key `host:H` ([`Key::host`]).
///
/// - Opened on first use, so that a process that makes no request never
///   touches it; a SQLite file that does not exist yet holds no cooldown
///   and is created only to record one.
/// - A refusal is recorded as a failure of the host's key
///   ([`Ledger::record`]): `rate_limit` for a 429, `overloaded` for a 503
///   or 529, `quota` when the body says a quota is used up, until the
///   host's wait (at most the reason's cap), never shortening a longer
///   live cooldown.
/// - Looking is one indexed read ([`Ledger::until`]); a success forgets
///   the entry only if nobody lengthened it since it was read
///   ([`Ledger::clear_if_over`]).
///
/// Every call blocks for a database round trip.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use backstop_core::hosts::{HostCooldowns, HostRefusal};
/// use backstop_ledger::HostLedger;
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("backstop.db");
/// let hosts = HostLedger::new(backstop_core::StateLocation::Sqlite(path.clone()));
/// assert_eq!(hosts.until("huggingface.co").unwrap(), None);
/// assert!(!path.exists(), "looking creates nothing");
///
/// let until = SystemTime::now() + Duration::from_secs(55);
/// let refusal = HostRefusal { status: 429, quota: false, until, from_body: false, message: "HTTP 429".into() };
/// hosts.cool("huggingface.co", &refusal).unwrap();
/// assert!(hosts.until("huggingface.co").unwrap().is_some());
/// ```
pub struct HostLedger {
    location: StateLocation,
    ledger: Mutex<Option<Arc<Ledger>>>,
}

impl HostLedger {
    /// The ledger at `location`, not opened yet.
    pub fn new(location: StateLocation) -> HostLedger {
        HostLedger {
            location,
            ledger: Mutex::new(None),
        }
    }

    /// The ledger, opened on first use; `None` when it does not exist
    /// and `create` is false (a SQLite file not made yet).
    fn ledger(&self, create: bool) -> Result<Option<Arc<Ledger>>, HostsError> {
        let mut slot = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ledger) = slot.as_ref() {
            return Ok(Some(Arc::clone(ledger)));
        }
        if !create
            && let StateLocation::Sqlite(path) = &self.location
            && !path.exists()
        {
            return Ok(None);
        }
        let ledger = Arc::new(Ledger::new(crate::store::open(&self.location)?));
        *slot = Some(Arc::clone(&ledger));
        Ok(Some(ledger))
    }
}

impl HostCooldowns for HostLedger {
    fn until(&self, host: &str) -> Result<Option<SystemTime>, HostsError> {
        let key = Key::host(host)?;
        match self.ledger(false)? {
            Some(ledger) => Ok(ledger.until(&key)?),
            None => Ok(None),
        }
    }

    fn cool(&self, host: &str, refusal: &HostRefusal) -> Result<SystemTime, HostsError> {
        let key = Key::host(host)?;
        let Some(ledger) = self.ledger(true)? else {
            return Ok(refusal.until);
        };
        // Over already: recording it would cool the host for the
        // reason's default instead.
        if refusal.until <= ledger.clock().now() {
            return Ok(refusal.until);
        }
        let reason = if refusal.quota {
            Reason::Quota
        } else if refusal.status == 429 {
            Reason::RateLimit
        } else {
            Reason::Overloaded
        };
        let source = if refusal.from_body {
            Source::Body
        } else {
            Source::Header
        };
        let failure = LedgerFailure {
            reason,
            wait: Some((refusal.until, source)),
            message: Some(refusal.message.clone()),
        };
        Ok(ledger.record(&key, &failure)?.until)
    }

    fn clear(&self, host: &str, seen: SystemTime) -> Result<bool, HostsError> {
        let key = Key::host(host)?;
        match self.ledger(false)? {
            Some(ledger) => Ok(ledger.clear_if_over(&key, seen)?),
            None => Ok(false),
        }
    }
}
