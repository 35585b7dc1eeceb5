//! Where the ledger lives: a small trait, a SQLite store for one machine
//! and a PostgreSQL store for many. Both pass the same conformance suite
//! (`tests/conformance.rs`).

mod postgres;
mod sqlite;

use backstop_core::StateLocation;

pub use self::postgres::PostgresStore;
pub use self::sqlite::SqliteStore;
use crate::{Entry, Key};

/// What an [`Store::update`] closure decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Leave the entry as it is.
    Keep,
    /// Write this entry (its key must be the key being updated).
    Put(Entry),
    /// Delete the entry.
    Remove,
}

/// Storage of ledger entries.
///
/// Promises every implementation keeps (the conformance suite checks them):
/// `update` is atomic per key — no other writer, in this process or any
/// other, changes the entry between the read handed to the closure and the
/// write of its decision; an update either happens whole or not at all;
/// entries read back equal entries written (times at millisecond
/// precision); a store opened by many processes at once never reports
/// "locked" to its caller while another writer merely holds the lock for a
/// moment.
///
/// Every call blocks the calling thread until the database answers (a
/// SQLite file waiting out another writer, a PostgreSQL server across the
/// network): from async code, call it where blocking is allowed
/// (`tokio::task::spawn_blocking`).
pub trait Store: Send + Sync {
    /// Reads the entry of `key`, lets `change` decide, and writes the
    /// decision, atomically. `change` may run more than once (when the
    /// store retries a conflicting transaction), so it must not have side
    /// effects. Returns the entry as it stands afterwards.
    fn update(
        &self,
        key: &Key,
        change: &mut dyn FnMut(Option<Entry>) -> Change,
    ) -> Result<Option<Entry>, StoreError>;

    /// The entries of these keys (missing keys are simply absent).
    fn get(&self, keys: &[Key]) -> Result<Vec<Entry>, StoreError>;

    /// Every entry, ordered by key.
    fn list(&self) -> Result<Vec<Entry>, StoreError>;

    /// Deletes the entry of `key`; whether there was one.
    fn remove(&self, key: &Key) -> Result<bool, StoreError>;

    /// Deletes every entry; how many there were.
    fn remove_all(&self) -> Result<u64, StoreError>;

    /// Where the store is, for messages ("sqlite:/home/me/.local/state/backstop/backstop.db",
    /// "postgres://db.internal:5432/ops"); never a password.
    fn location(&self) -> String;
}

/// A store that failed: the error every backstop store shares. Its
/// messages name "the ledger".
pub type StoreError = backstop_store::StoreError;

/// Opens the store at `location`: PostgreSQL for a URL, else a SQLite
/// file.
pub fn open(location: &StateLocation) -> Result<Box<dyn Store>, StoreError> {
    Ok(match location {
        StateLocation::Postgres(url) => Box::new(PostgresStore::open(url)?),
        StateLocation::Sqlite(path) => Box::new(SqliteStore::open(path)?),
    })
}

/// The entry's row as both stores keep it.
pub(crate) struct Row {
    pub key: String,
    pub reason: String,
    pub until_ms: i64,
    pub source: String,
    pub last_error: Option<String>,
    pub failures: i64,
    pub fingerprint: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl Row {
    pub(crate) fn from_entry(e: &Entry) -> Row {
        use backstop_core::time::to_millis;
        Row {
            key: e.key.as_str().to_owned(),
            reason: e.reason.as_str().to_owned(),
            until_ms: to_millis(e.until),
            source: e.source.as_str().to_owned(),
            last_error: e.last_error.clone(),
            failures: i64::from(e.failures),
            fingerprint: e.fingerprint.clone(),
            created_ms: to_millis(e.created),
            updated_ms: to_millis(e.updated),
        }
    }

    /// The entry the row holds, read as best it can be: a row written by
    /// hand, by another version or on another machine never makes a reader
    /// fail. Times out of range are clamped (before 1970 to the epoch,
    /// beyond year 9999 to its end; [`crate::Ledger`] then holds a deadline
    /// to [`crate::MAX_COOLDOWN`]), a negative count of failures is 0, an
    /// unknown source is `default`, and an unknown reason is read as
    /// `error` with a note in the last error, so that the key still cools.
    /// Only a row whose key this version cannot parse is `None` (with a
    /// warning): no caller could name it.
    pub(crate) fn into_entry(self, location: &str) -> Option<Entry> {
        use backstop_core::time::from_millis;
        let Ok(key) = self.key.parse::<Key>() else {
            tracing::warn!(
                "the ledger at {location} has an entry whose key this backstop cannot read ({:?}); it is ignored",
                self.key.chars().take(80).collect::<String>(),
            );
            return None;
        };
        let (reason, last_error) = match self.reason.parse::<crate::Reason>() {
            Ok(reason) => (reason, self.last_error),
            Err(_) => {
                let stored: String = self.reason.chars().take(40).collect();
                let note = format!("stored reason {stored:?} is unknown to this backstop");
                let last_error = match self.last_error {
                    Some(e) => format!("{note}: {e}"),
                    None => note,
                };
                (crate::Reason::Error, Some(last_error))
            }
        };
        Some(Entry {
            key,
            reason,
            until: from_millis(self.until_ms),
            source: crate::Source::parse(&self.source).unwrap_or(crate::Source::Default),
            last_error,
            failures: u32::try_from(self.failures.max(0)).unwrap_or(u32::MAX),
            fingerprint: self.fingerprint,
            created: from_millis(self.created_ms),
            updated: from_millis(self.updated_ms),
        })
    }
}

/// The columns of [`Row`], in its order, for SELECTs.
pub(crate) const COLUMNS: &str =
    "key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms";

/// The name of the ledger's schema in `backstop_schema`, the table of
/// versions every backstop component keeps in a shared database.
pub(crate) const COMPONENT: &str = "ledger";

/// The ledger's SQLite migrations (`migrations/sqlite/`), in order;
/// version N is the first N applied ([`backstop_store::sqlite::Database::open`]
/// keeps the count). Never edit one that has shipped: add the next, for
/// both backends, so that a version means the same schema in each.
pub(crate) const SQLITE_MIGRATIONS: &[&str] = &[
    // 1: the cooldowns.
    include_str!("../../migrations/sqlite/0001_cooldowns.sql"),
];

/// The ledger's PostgreSQL migrations (`migrations/postgres/`), as
/// [`SQLITE_MIGRATIONS`].
pub(crate) const POSTGRES_MIGRATIONS: &[&str] = &[
    // 1: the cooldowns.
    include_str!("../../migrations/postgres/0001_cooldowns.sql"),
];

/// Writes one entry, inserting or replacing (parameters in [`COLUMNS`] order).
pub(crate) const UPSERT: &str = "INSERT INTO backstop_cooldowns
    (key, reason, until_ms, source, last_error, failures, fingerprint, created_ms, updated_ms)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (key) DO UPDATE SET
        reason = excluded.reason, until_ms = excluded.until_ms, source = excluded.source,
        last_error = excluded.last_error, failures = excluded.failures,
        fingerprint = excluded.fingerprint, created_ms = excluded.created_ms,
        updated_ms = excluded.updated_ms";

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use backstop_store::postgres::testing::TestSchema;

    use super::*;

    #[test]
    fn each_version_exists_for_both_backends() {
        assert_eq!(SQLITE_MIGRATIONS.len(), POSTGRES_MIGRATIONS.len());
    }

    #[test]
    fn a_ledger_at_every_earlier_version_migrates_to_the_latest() {
        for version in 0..SQLITE_MIGRATIONS.len() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("l.db");
            backstop_store::sqlite::Database::open::<Infallible>(
                &path,
                COMPONENT,
                &SQLITE_MIGRATIONS[..version],
            )
            .unwrap();
            let store = SqliteStore::open(&path).unwrap_or_else(|e| panic!("from {version}: {e}"));
            assert!(store.list().unwrap().is_empty());

            let schema = TestSchema::new("ledger_migrate");
            backstop_store::postgres::Database::connect::<Infallible>(schema.url(), COMPONENT, 1)
                .unwrap()
                .migrate::<Infallible>(&POSTGRES_MIGRATIONS[..version])
                .unwrap();
            let store =
                PostgresStore::open(schema.url()).unwrap_or_else(|e| panic!("from {version}: {e}"));
            assert!(store.list().unwrap().is_empty());
        }
    }
}
