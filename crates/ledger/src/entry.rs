//! One row of the ledger.

use std::time::SystemTime;

use crate::{Key, Reason, Source};

/// A key's cooldown, live or expired. Expired entries are kept for a while
/// so that a key that fails again soon escalates instead of starting over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key that cools.
    pub key: Key,
    /// Why.
    pub reason: Reason,
    /// Until when (UTC, millisecond precision).
    pub until: SystemTime,
    /// Where the length came from.
    pub source: Source,
    /// The last error seen, short and with credentials removed.
    pub last_error: Option<String>,
    /// Consecutive failures: cooldown episodes since the key last
    /// succeeded, halved by each success. Drives escalation.
    pub failures: u32,
    /// For an auth cooldown: the fingerprint of the credential that was
    /// refused. The cooldown ends as soon as the credential in use has a
    /// different fingerprint. Never the credential itself.
    pub fingerprint: Option<String>,
    /// When the entry was first written.
    pub created: SystemTime,
    /// When it last changed.
    pub updated: SystemTime,
}

/// Where an entry stands at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// The key is cooling down.
    Cooling,
    /// The deadline has passed.
    Expired,
    /// An auth cooldown whose credential has changed since: over.
    CredentialChanged,
}

impl Entry {
    /// Where the entry stands at `now`, when the credential currently in
    /// use for its provider has fingerprint `credential`.
    pub fn state(&self, now: SystemTime, credential: Option<&str>) -> State {
        if self.reason == Reason::Auth
            && let Some(refused) = &self.fingerprint
            && credential != Some(refused.as_str())
        {
            return State::CredentialChanged;
        }
        if self.until > now {
            State::Cooling
        } else {
            State::Expired
        }
    }

    /// Whether the key is cooling down at `now`.
    pub fn is_cooling(&self, now: SystemTime, credential: Option<&str>) -> bool {
        self.state(now, credential) == State::Cooling
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry(reason: Reason, fingerprint: Option<&str>) -> Entry {
        Entry {
            key: "anthropic".parse().unwrap(),
            reason,
            until: UNIX_EPOCH + Duration::from_secs(100),
            source: Source::Default,
            last_error: None,
            failures: 1,
            fingerprint: fingerprint.map(str::to_owned),
            created: UNIX_EPOCH,
            updated: UNIX_EPOCH,
        }
    }

    #[test]
    fn only_auth_entries_follow_the_credential() {
        let before = UNIX_EPOCH + Duration::from_secs(50);
        let after = UNIX_EPOCH + Duration::from_secs(150);
        let auth = entry(Reason::Auth, Some("aaa"));
        assert_eq!(auth.state(before, Some("aaa")), State::Cooling);
        assert_eq!(auth.state(before, Some("bbb")), State::CredentialChanged);
        assert_eq!(auth.state(before, None), State::CredentialChanged);
        assert_eq!(auth.state(after, Some("aaa")), State::Expired);
        let quota = entry(Reason::Quota, Some("aaa"));
        assert_eq!(quota.state(before, Some("bbb")), State::Cooling);
        let untied = entry(Reason::Auth, None);
        assert_eq!(untied.state(before, Some("bbb")), State::Cooling);
    }
}
