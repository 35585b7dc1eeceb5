//! What a coordinator knows of its own dependencies, for `/healthz` and for
//! the services that must not judge others by an outage of their own.
//!
//! A coordinator that loses its store or NATS keeps running: it says so
//! here (and in its log, once per outage), keeps the outcomes it could not
//! store, and resumes when they return.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use serde::Serialize;

/// The state of a coordinator's dependencies. Shared by its services; each
/// records what its own calls found.
#[derive(Default)]
pub struct Dependencies {
    store_down_since: Mutex<Option<SystemTime>>,
    nats: Option<async_nats::Client>,
    leader: AtomicBool,
}

/// What `/healthz` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// `ok`, or `degraded` when a dependency cannot be reached.
    pub status: &'static str,
    /// `ok` or `unreachable`.
    pub store: &'static str,
    /// Since when the store cannot be reached.
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "crate::model::opt_time"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub store_down_since: Option<SystemTime>,
    /// `connected` or `disconnected`; absent without NATS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nats: Option<&'static str>,
    /// `leader` when this coordinator runs housekeeping, else `standby`.
    pub housekeeping: &'static str,
}

impl Dependencies {
    /// The status of a coordinator reaching remote workers through `nats`
    /// (none: no remote workers).
    pub fn new(nats: Option<async_nats::Client>) -> Self {
        Dependencies {
            nats,
            ..Dependencies::default()
        }
    }

    /// A store call succeeded. Returns whether the store had been
    /// unreachable until now.
    pub fn store_ok(&self) -> bool {
        self.lock().take().is_some()
    }

    /// A store call failed because the store could not be reached (or
    /// failed otherwise). Returns whether it was reachable until now.
    pub fn store_failed(&self, now: SystemTime) -> bool {
        let mut since = self.lock();
        let first = since.is_none();
        since.get_or_insert(now);
        first
    }

    /// Whether the store answers.
    pub fn store_reachable(&self) -> bool {
        self.lock().is_none()
    }

    /// Whether NATS is connected (true without NATS: nothing to hear).
    pub fn nats_connected(&self) -> bool {
        self.nats
            .as_ref()
            .is_none_or(|c| c.connection_state() == async_nats::connection::State::Connected)
    }

    /// Records whether this coordinator holds the housekeeping lock.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }

    /// Whether this coordinator holds the housekeeping lock.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// What `/healthz` answers.
    pub fn report(&self) -> Report {
        let down = *self.lock();
        let nats = self.nats.as_ref().map(|_| {
            if self.nats_connected() {
                "connected"
            } else {
                "disconnected"
            }
        });
        let degraded = down.is_some() || nats == Some("disconnected");
        Report {
            status: if degraded { "degraded" } else { "ok" },
            store: if down.is_some() { "unreachable" } else { "ok" },
            store_down_since: down,
            nats,
            housekeeping: if self.is_leader() {
                "leader"
            } else {
                "standby"
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<SystemTime>> {
        self.store_down_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn an_outage_is_reported_from_its_start_until_it_ends() {
        let status = Dependencies::new(None);
        assert_eq!(status.report().status, "ok");
        assert_eq!(status.report().nats, None);
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(status.store_failed(t), "the first failure starts it");
        assert!(!status.store_failed(t + Duration::from_secs(5)));
        let report = status.report();
        assert_eq!((report.status, report.store), ("degraded", "unreachable"));
        assert_eq!(report.store_down_since, Some(t));
        let json = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(json["store_down_since"], "2027-01-15T08:00:00.000Z");
        assert!(status.store_ok(), "the first success ends it");
        assert!(!status.store_ok());
        status.set_leader(true);
        assert_eq!(status.report().housekeeping, "leader");
        assert_eq!(status.report().status, "ok");
    }
}
