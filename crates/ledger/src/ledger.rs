//! The ledger's rules: which key a failure cools, for how long, and which
//! model is available now.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backstop_core::clock::{Clock, SystemClock};
use backstop_core::time::{format_rfc3339, from_millis, later, to_millis};

use crate::durations::MAX_COOLDOWN;
use crate::store::{Change, Store, StoreError};
use crate::{Credentials, Durations, Entry, Key, LocalCredentials, Reason, Source, State};

/// The longest last-error message kept, in characters.
const MAX_MESSAGE: usize = 300;

/// A failure to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerFailure {
    /// What kind of failure.
    pub reason: Reason,
    /// Until when the server or the tool said to wait, and which of them
    /// said it; `None` for the escalating default.
    pub wait: Option<(SystemTime, Source)>,
    /// The error, as the tool or server put it. Credentials in it are
    /// removed before it is stored.
    pub message: Option<String>,
}

impl LedgerFailure {
    /// A failure with no wait and no message.
    pub fn new(reason: Reason) -> Self {
        LedgerFailure {
            reason,
            wait: None,
            message: None,
        }
    }
}

/// Why a ledger call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request makes no sense (a deadline in the past). Nothing was
    /// written.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_temporary())
    }
}

/// The answer of [`Ledger::pick`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    /// The first model, in the order given, that neither it nor its
    /// provider is cooling.
    pub available: Option<Key>,
    /// The models before it (all of them when none is available), each with
    /// the entry that holds it back longest.
    pub blocked: Vec<(Key, Entry)>,
}

impl Pick {
    /// When none is available: the model that frees up first, and when.
    pub fn earliest(&self) -> Option<(&Key, SystemTime)> {
        if self.available.is_some() {
            return None;
        }
        self.blocked
            .iter()
            .min_by_key(|(_, e)| e.until)
            .map(|(k, e)| (k, e.until))
    }
}

/// The outcome of [`Ledger::set`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Set {
    /// The cooldown was written.
    Written(Entry),
    /// A longer cooldown was already running and was kept.
    KeptLonger(Entry),
}

/// The cooldown ledger.
///
/// ```
/// use backstop_ledger::{LedgerFailure, Ledger, Reason, SqliteStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let ledger = Ledger::new(Box::new(SqliteStore::open(dir.path().join("l.db")).unwrap()));
/// let sonnet = "anthropic/claude-sonnet-4-5".parse().unwrap();
/// let gpt: backstop_ledger::Key = "openai/gpt-5".parse().unwrap();
/// ledger.record(&sonnet, &LedgerFailure::new(Reason::RateLimit)).unwrap();
/// let pick = ledger.pick(&[sonnet, gpt.clone()]).unwrap();
/// assert_eq!(pick.available, Some(gpt));
/// ```
pub struct Ledger {
    store: Box<dyn Store>,
    clock: Arc<dyn Clock>,
    credentials: Arc<dyn Credentials>,
    durations: Durations,
    rng: Mutex<fastrand::Rng>,
}

impl Ledger {
    /// A ledger on `store` with the system clock, this machine's
    /// credentials and the default durations.
    pub fn new(store: Box<dyn Store>) -> Ledger {
        Ledger {
            store,
            clock: Arc::new(SystemClock),
            credentials: Arc::new(LocalCredentials::new()),
            durations: Durations::default(),
            rng: Mutex::new(fastrand::Rng::new()),
        }
    }

    /// Uses another clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The clock the ledger reads "now" from: code that acts on its
    /// deadlines reads the same one.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Uses another source of credential fingerprints.
    pub fn with_credentials(mut self, credentials: Arc<dyn Credentials>) -> Self {
        self.credentials = credentials;
        self
    }

    /// Uses other default durations.
    pub fn with_durations(mut self, durations: Durations) -> Self {
        self.durations = durations;
        self
    }

    /// Seeds the jitter, for tests.
    pub fn with_seed(self, seed: u64) -> Self {
        *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = fastrand::Rng::with_seed(seed);
        self
    }

    /// Where the ledger is stored.
    pub fn location(&self) -> String {
        self.store.location()
    }

    /// Now, at the millisecond precision of the store.
    fn now(&self) -> SystemTime {
        from_millis(to_millis(self.clock.now()))
    }

    /// Records a failure of `key` (a model, or a provider): cools the model
    /// for a rate limit, an overload or an error, and its provider for a
    /// quota or an auth failure.
    ///
    /// The cooldown lasts until the wait the failure carries, if any and if
    /// it is in the future (cut to the reason's cap, [`crate::Defaults::cap`]),
    /// else the default for the reason, escalated by the key's consecutive
    /// failures. A failure
    /// recorded while the key is already cooling is the same episode: it
    /// does not escalate, and it never shortens the cooldown — a shorter
    /// one over a longer live one leaves the longer in place.
    pub fn record(&self, key: &Key, failure: &LedgerFailure) -> Result<Entry, Error> {
        // A host key is its own provider: a host cools whatever the reason.
        let key = match failure.reason.scope() {
            crate::Scope::Provider => key.provider_key(),
            crate::Scope::Model | crate::Scope::Host => key.clone(),
        };
        let now = self.now();
        let credential = self.credentials.fingerprint(key.provider());
        let message = failure.message.as_deref().map(clean_message);
        let sample = self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        let cap = later(now, self.durations.defaults(failure.reason).cap);
        let wait = failure
            .wait
            .filter(|(until, _)| *until > now)
            .map(|(until, source)| (from_millis(to_millis(until.min(cap))), source));
        let durations = &self.durations;
        let after = self.store.update(&key, &mut |old| {
            let old = old.map(|e| bounded(e, now));
            let cooling = old
                .as_ref()
                .filter(|e| e.is_cooling(now, credential.as_deref()));
            let failures = match (&old, cooling) {
                (Some(e), Some(_)) => e.failures.max(1),
                (Some(e), None) => e.failures.saturating_add(1),
                (None, _) => 1,
            };
            let (until, source) = wait.unwrap_or_else(|| {
                let d = durations.jittered(failure.reason, failures, sample);
                (from_millis(to_millis(later(now, d))), Source::Default)
            });
            match cooling {
                Some(live) if live.until >= until => Change::Put(Entry {
                    failures,
                    updated: now,
                    ..live.clone()
                }),
                _ => Change::Put(Entry {
                    key: key.clone(),
                    reason: failure.reason,
                    until,
                    source,
                    last_error: message.clone(),
                    failures,
                    fingerprint: (failure.reason == Reason::Auth)
                        .then(|| credential.clone())
                        .flatten(),
                    created: old.as_ref().map_or(now, |e| e.created),
                    updated: now,
                }),
            }
        })?;
        after.ok_or_else(|| Error::Invalid("the store dropped the entry it was given".into()))
    }

    /// Records a success of `model`: halves the consecutive failures of
    /// the model and of its provider, and deletes entries that are over
    /// and have nothing left to remember. A live cooldown is not ended by
    /// a success (a manual one may be running on purpose).
    pub fn succeeded(&self, model: &Key) -> Result<(), Error> {
        let now = self.now();
        let credential = self.credentials.fingerprint(model.provider());
        for key in [model.clone(), model.provider_key()] {
            self.store
                .update(&key, &mut |old| match old.map(|e| bounded(e, now)) {
                    None => Change::Keep,
                    Some(e) => {
                        let failures = e.failures / 2;
                        if failures == 0 && !e.is_cooling(now, credential.as_deref()) {
                            Change::Remove
                        } else if failures == e.failures {
                            Change::Keep
                        } else {
                            Change::Put(Entry {
                                failures,
                                updated: now,
                                ..e
                            })
                        }
                    }
                })?;
        }
        Ok(())
    }

    /// Cools `key` by hand until `until`. A longer live cooldown is kept
    /// unless `replace`; an auth cooldown set by hand also ends when the
    /// credential changes. `until` must be in the future and at most
    /// [`MAX_COOLDOWN`] away ([`deadline`]); else nothing is written.
    pub fn set(
        &self,
        key: &Key,
        reason: Reason,
        until: SystemTime,
        replace: bool,
    ) -> Result<Set, Error> {
        let until = deadline(until, self.now())?;
        self.set_until(key, reason, Some(until), replace)
    }

    /// Cools `key` by hand for the default of `reason`, escalated by the
    /// key's consecutive failures as a recorded failure would be (and
    /// counted as one). A longer live cooldown is kept unless `replace`.
    pub fn set_default(&self, key: &Key, reason: Reason, replace: bool) -> Result<Set, Error> {
        self.set_until(key, reason, None, replace)
    }

    /// [`Ledger::set`] and [`Ledger::set_default`]: `None` for the
    /// reason's escalated default.
    fn set_until(
        &self,
        key: &Key,
        reason: Reason,
        until: Option<SystemTime>,
        replace: bool,
    ) -> Result<Set, Error> {
        let now = self.now();
        let credential = self.credentials.fingerprint(key.provider());
        let sample = self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64();
        let durations = &self.durations;
        let mut kept = false;
        let after = self.store.update(key, &mut |old| {
            kept = false;
            let old = old.map(|e| bounded(e, now));
            let live = old
                .as_ref()
                .filter(|e| e.is_cooling(now, credential.as_deref()));
            let (until, failures) = match until {
                Some(until) => (until, old.as_ref().map_or(0, |e| e.failures)),
                None => {
                    let failures = match (&old, live) {
                        (Some(e), Some(_)) => e.failures.max(1),
                        (Some(e), None) => e.failures.saturating_add(1),
                        (None, _) => 1,
                    };
                    let d = durations.jittered(reason, failures, sample);
                    (from_millis(to_millis(later(now, d))), failures)
                }
            };
            if let Some(live) = live
                && live.until > until
                && !replace
            {
                kept = true;
                return Change::Keep;
            }
            Change::Put(Entry {
                key: key.clone(),
                reason,
                until,
                source: Source::Manual,
                last_error: Some("set by hand".to_owned()),
                failures,
                fingerprint: (reason == Reason::Auth)
                    .then(|| credential.clone())
                    .flatten(),
                created: old.as_ref().map_or(now, |e| e.created),
                updated: now,
            })
        })?;
        let entry = after
            .ok_or_else(|| Error::Invalid("the store dropped the entry it was given".into()))?;
        Ok(if kept {
            Set::KeptLonger(entry)
        } else {
            Set::Written(entry)
        })
    }

    /// Ends the cooldown of `key` and forgets its escalation; whether there
    /// was one.
    pub fn clear(&self, key: &Key) -> Result<bool, Error> {
        Ok(self.store.remove(key)?)
    }

    /// Forgets everything; how many entries there were.
    pub fn clear_all(&self) -> Result<u64, Error> {
        Ok(self.store.remove_all()?)
    }

    /// When the cooldown of `key` ends as stored — in the past too, while
    /// the entry is kept — or `None` when there is no entry: one indexed
    /// read. For a host's key, what the HTTP client asks before every
    /// request.
    pub fn until(&self, key: &Key) -> Result<Option<SystemTime>, Error> {
        let now = self.now();
        Ok(self
            .store
            .get(std::slice::from_ref(key))?
            .into_iter()
            .find(|e| e.key == *key)
            .map(|e| bounded(e, now).until))
    }

    /// Forgets the entry of `key` if its cooldown ends no later than
    /// `seen`: a host answered a request sent once the cooldown it read
    /// was over. An entry that ends later was written since (another
    /// process was refused again) and is kept. Whether it was forgotten.
    pub fn clear_if_over(&self, key: &Key, seen: SystemTime) -> Result<bool, Error> {
        let mut forgot = false;
        self.store.update(key, &mut |old| {
            forgot = old.as_ref().is_some_and(|e| e.until <= seen);
            if forgot { Change::Remove } else { Change::Keep }
        })?;
        Ok(forgot)
    }

    /// Every entry with where it stands now.
    pub fn list(&self) -> Result<Vec<(Entry, State)>, Error> {
        let now = self.now();
        let mut credentials = FingerprintCache::new(&*self.credentials);
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|e| {
                let e = bounded(e, now);
                let state = e.state(now, credentials.get(&e));
                (e, state)
            })
            .collect())
    }

    /// The first of `models` (in order) that can be used now: neither the
    /// model nor its provider is cooling. One read of the store.
    pub fn pick(&self, models: &[Key]) -> Result<Pick, Error> {
        let now = self.now();
        let mut keys: Vec<Key> = models
            .iter()
            .flat_map(|m| [m.clone(), m.provider_key()])
            .collect();
        keys.sort();
        keys.dedup();
        let entries: HashMap<Key, Entry> = self
            .store
            .get(&keys)?
            .into_iter()
            .map(|e| (e.key.clone(), bounded(e, now)))
            .collect();
        let mut credentials = FingerprintCache::new(&*self.credentials);
        let mut blocked = Vec::new();
        for model in models {
            let holding = [entries.get(model), entries.get(&model.provider_key())]
                .into_iter()
                .flatten()
                .filter(|e| e.is_cooling(now, credentials.get(e)))
                .max_by_key(|e| e.until);
            match holding {
                None => {
                    return Ok(Pick {
                        available: Some(model.clone()),
                        blocked,
                    });
                }
                Some(e) => blocked.push((model.clone(), e.clone())),
            }
        }
        Ok(Pick {
            available: None,
            blocked,
        })
    }
}

/// Reads a provider's credential fingerprint once, and only for auth
/// entries (the only ones it matters to).
struct FingerprintCache<'c> {
    credentials: &'c dyn Credentials,
    seen: HashMap<String, Option<String>>,
}

impl<'c> FingerprintCache<'c> {
    fn new(credentials: &'c dyn Credentials) -> Self {
        FingerprintCache {
            credentials,
            seen: HashMap::new(),
        }
    }

    fn get(&mut self, entry: &Entry) -> Option<&str> {
        if entry.reason != Reason::Auth || entry.fingerprint.is_none() {
            return None;
        }
        let provider = entry.key.provider();
        self.seen
            .entry(provider.to_owned())
            .or_insert_with(|| self.credentials.fingerprint(provider))
            .as_deref()
    }
}

/// One line, no control characters, no credentials, at most
/// [`MAX_MESSAGE`] characters.
fn clean_message(message: &str) -> String {
    let one_line: String = message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let clean = backstop_core::redact(&one_line, &[]);
    let mut out: String = clean.chars().take(MAX_MESSAGE).collect();
    if clean.chars().count() > MAX_MESSAGE {
        out.push('…');
    }
    out
}

/// `until` as the end of a cooldown set at `now`, at the store's
/// millisecond precision: it must be in the future, and at most
/// [`MAX_COOLDOWN`] away. [`Ledger::set`] checks it; a command checks it
/// too before it opens the ledger.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use backstop_ledger::{Error, MAX_COOLDOWN, deadline};
///
/// let now = SystemTime::now();
/// assert!(deadline(now + Duration::from_secs(60), now).is_ok());
/// assert!(matches!(deadline(now + MAX_COOLDOWN * 2, now), Err(Error::Invalid(_))));
/// ```
pub fn deadline(until: SystemTime, now: SystemTime) -> Result<SystemTime, Error> {
    if until <= now {
        return Err(Error::Invalid(format!(
            "{} is in the past; a cooldown must end in the future",
            format_rfc3339(until)
        )));
    }
    if until > later(now, MAX_COOLDOWN) {
        return Err(Error::Invalid(format!(
            "{} is more than {} days away, the longest a cooldown lasts",
            format_rfc3339(until),
            MAX_COOLDOWN.as_secs() / 86_400,
        )));
    }
    Ok(from_millis(to_millis(until)))
}

/// `entry` with its deadline at most [`MAX_COOLDOWN`] from `now`: a row
/// written by hand or by another version cannot hold a key for ever.
fn bounded(mut entry: Entry, now: SystemTime) -> Entry {
    let furthest = from_millis(to_millis(later(now, MAX_COOLDOWN)));
    if entry.until > furthest {
        entry.until = furthest;
    }
    entry
}

/// How long until `at`, zero if past.
pub fn remaining(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_clean_line_without_secrets() {
        assert_eq!(
            clean_message(
                "API Error: 401\n  invalid x-api-key sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA\x1b[0m"
            ),
            "API Error: 401 invalid x-api-key <redacted>[0m"
        );
        assert_eq!(
            clean_message(&"x".repeat(1000)).chars().count(),
            MAX_MESSAGE + 1
        );
    }
}
