//! The ledger in PostgreSQL: one ledger for many machines.

use backstop_store::postgres::{Database, postgres};

use super::{COLUMNS, COMPONENT, Change, POSTGRES_MIGRATIONS, Row, Store, StoreError, UPSERT};
use crate::{Entry, Key};

/// The first key of the advisory locks the ledger takes on updates ("bl");
/// the second is the hash of the key.
const LOCK_CLASS: i32 = 0x626c;

/// A PostgreSQL ledger.
///
/// Updates run in a transaction that first takes a transaction-scoped
/// advisory lock on the key, so concurrent writers of one key queue up
/// while writers of other keys go on. Migrations run under an advisory lock
/// too, so coordinators starting together do not race. A lost connection is
/// re-established on the next call ([`backstop_store::postgres`]).
pub struct PostgresStore {
    db: Database,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// and brings its schema up to date. Connections time out after 10 s
    /// unless the URL says otherwise.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let db = Database::connect(url, COMPONENT, 1)?;
        db.migrate(POSTGRES_MIGRATIONS)?;
        Ok(PostgresStore { db })
    }

    /// Runs `f` on a live connection, reconnecting once if the connection
    /// turns out to be gone.
    fn with_client<T>(
        &self,
        f: impl FnMut(&mut postgres::Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        self.db.with_client(f)
    }
}

/// Reads a row without trusting its types: NULL is empty or 0, a column
/// changed to another type by hand (an integer of another width, text) is
/// read through it, anything else is empty or 0. `postgres::Row::get`
/// panics on a mismatch; this never does.
fn read_row(r: &postgres::Row) -> Row {
    let text = |i: usize| -> Option<String> {
        r.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .or_else(|| int_of(r, i).map(|n| n.to_string()))
    };
    let int = |i: usize| -> i64 {
        int_of(r, i)
            .or_else(|| {
                r.try_get::<_, Option<String>>(i)
                    .ok()
                    .flatten()
                    .and_then(|t| t.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    Row {
        key: text(0).unwrap_or_default(),
        reason: text(1).unwrap_or_default(),
        until_ms: int(2),
        source: text(3).unwrap_or_default(),
        last_error: text(4),
        failures: int(5),
        fingerprint: text(6),
        created_ms: int(7),
        updated_ms: int(8),
    }
}

/// Column `i` as an integer, if it is one of PostgreSQL's integer types or
/// a double (truncated, saturating).
fn int_of(r: &postgres::Row, i: usize) -> Option<i64> {
    r.try_get::<_, Option<i64>>(i)
        .ok()
        .flatten()
        .or_else(|| r.try_get::<_, Option<i32>>(i).ok().flatten().map(i64::from))
        .or_else(|| r.try_get::<_, Option<i16>>(i).ok().flatten().map(i64::from))
        // `as` saturates, and NaN is 0.
        .or_else(|| {
            r.try_get::<_, Option<f64>>(i)
                .ok()
                .flatten()
                .map(|x| x as i64)
        })
}

impl Store for PostgresStore {
    fn update(
        &self,
        key: &Key,
        change: &mut dyn FnMut(Option<Entry>) -> Change,
    ) -> Result<Option<Entry>, StoreError> {
        let location = self.db.location().to_owned();
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &key.as_str()],
            )?;
            let old = tx
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM backstop_cooldowns WHERE key = $1"),
                    &[&key.as_str()],
                )?
                .and_then(|r| read_row(&r).into_entry(&location));
            let after = match change(old.clone()) {
                Change::Keep => old,
                Change::Put(entry) => {
                    let row = Row::from_entry(&entry);
                    tx.execute(
                        UPSERT,
                        &[
                            &row.key,
                            &row.reason,
                            &row.until_ms,
                            &row.source,
                            &row.last_error,
                            &row.failures,
                            &row.fingerprint,
                            &row.created_ms,
                            &row.updated_ms,
                        ],
                    )?;
                    Some(entry)
                }
                Change::Remove => {
                    tx.execute(
                        "DELETE FROM backstop_cooldowns WHERE key = $1",
                        &[&key.as_str()],
                    )?;
                    None
                }
            };
            tx.commit()?;
            Ok(after)
        })
    }

    fn get(&self, keys: &[Key]) -> Result<Vec<Entry>, StoreError> {
        let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
        // Prepared once per connection: one round trip, for `pick` and for
        // the HTTP client's look before every request to a host.
        let rows = self.db.call(
            &format!("SELECT {COLUMNS} FROM backstop_cooldowns WHERE key = ANY($1)"),
            &[&names],
        )?;
        Ok(rows
            .iter()
            .filter_map(|r| read_row(r).into_entry(self.db.location()))
            .collect())
    }

    fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let rows = self.with_client(|client| {
            client.query(
                // Byte order, as SQLite sorts, whatever the database's collation.
                &format!("SELECT {COLUMNS} FROM backstop_cooldowns ORDER BY key COLLATE \"C\""),
                &[],
            )
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| read_row(r).into_entry(self.db.location()))
            .collect())
    }

    fn remove(&self, key: &Key) -> Result<bool, StoreError> {
        self.with_client(|client| {
            let mut tx = client.transaction()?;
            // The same lock as `update`: a removal never lands between an
            // update's read and its write.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&LOCK_CLASS, &key.as_str()],
            )?;
            let n = tx.execute(
                "DELETE FROM backstop_cooldowns WHERE key = $1",
                &[&key.as_str()],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn remove_all(&self) -> Result<u64, StoreError> {
        self.with_client(|client| client.execute("DELETE FROM backstop_cooldowns", &[]))
    }

    fn location(&self) -> String {
        self.db.location().to_owned()
    }
}
