//! The ledger in a SQLite file: the default, for one machine.

use std::path::{Path, PathBuf};

use backstop_store::sqlite::Database;
use backstop_store::sqlite::rusqlite::{
    self, Connection, OptionalExtension, TransactionBehavior, params_from_iter,
};

use super::{COLUMNS, COMPONENT, Change, Row, SQLITE_MIGRATIONS, Store, StoreError, UPSERT};
use crate::{Entry, Key};

/// A SQLite ledger.
///
/// Opened as every backstop store opens SQLite
/// ([`backstop_store::sqlite`]): WAL mode (readers never wait for the
/// writer), `synchronous=FULL`, a busy timeout, and on top of it retries
/// with jittered backoff, so that many processes sharing the file wait
/// their turn instead of failing with "database is locked". Every write
/// transaction begins `IMMEDIATE` (a deferred transaction that later needs
/// the write lock gets "busy" without waiting).
pub struct SqliteStore {
    db: Database,
    location: String,
}

impl SqliteStore {
    /// Opens (creating if needed, directory included) the ledger at `path`
    /// and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let db = Database::open(path, COMPONENT, SQLITE_MIGRATIONS)?;
        let location = db.location().to_owned();
        Ok(SqliteStore { db, location })
    }

    /// The file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.location.trim_start_matches("sqlite:"))
    }

    /// Runs `f`, retrying while the database is busy or locked.
    fn with_retries<T>(
        &self,
        f: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        self.db.run(f)
    }
}

/// Reads a row whatever SQLite holds in its columns (it keeps any type in
/// any column): a number where text belongs is its digits, text where a
/// number belongs is parsed or 0, NULL is empty or 0.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    use backstop_store::sqlite::rusqlite::types::Value;
    let value = |i: usize| r.get::<_, Value>(i);
    let text = |i: usize| -> rusqlite::Result<Option<String>> {
        Ok(match value(i)? {
            Value::Null => None,
            Value::Integer(n) => Some(n.to_string()),
            Value::Real(x) => Some(x.to_string()),
            Value::Text(t) => Some(t),
            Value::Blob(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        })
    };
    let int = |i: usize| -> rusqlite::Result<i64> {
        Ok(match value(i)? {
            Value::Integer(n) => n,
            // `as` saturates, and NaN is 0.
            Value::Real(x) => x as i64,
            Value::Text(t) => t.trim().parse().unwrap_or(0),
            Value::Null | Value::Blob(_) => 0,
        })
    };
    Ok(Row {
        key: text(0)?.unwrap_or_default(),
        reason: text(1)?.unwrap_or_default(),
        until_ms: int(2)?,
        source: text(3)?.unwrap_or_default(),
        last_error: text(4)?,
        failures: int(5)?,
        fingerprint: text(6)?,
        created_ms: int(7)?,
        updated_ms: int(8)?,
    })
}

fn write_row(conn: &Connection, row: &Row) -> rusqlite::Result<usize> {
    conn.execute(
        UPSERT,
        rusqlite::params![
            row.key,
            row.reason,
            row.until_ms,
            row.source,
            row.last_error,
            row.failures,
            row.fingerprint,
            row.created_ms,
            row.updated_ms
        ],
    )
}

impl Store for SqliteStore {
    fn update(
        &self,
        key: &Key,
        change: &mut dyn FnMut(Option<Entry>) -> Change,
    ) -> Result<Option<Entry>, StoreError> {
        let location = self.location.clone();
        self.with_retries(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let old = tx
                .query_row(
                    &format!("SELECT {COLUMNS} FROM backstop_cooldowns WHERE key = $1"),
                    [key.as_str()],
                    read_row,
                )
                .optional()?
                .and_then(|row| row.into_entry(&location));
            let after = match change(old.clone()) {
                Change::Keep => old,
                Change::Put(entry) => {
                    write_row(&tx, &Row::from_entry(&entry))?;
                    Some(entry)
                }
                Change::Remove => {
                    tx.execute(
                        "DELETE FROM backstop_cooldowns WHERE key = $1",
                        [key.as_str()],
                    )?;
                    None
                }
            };
            tx.commit()?;
            Ok(after)
        })
    }

    fn get(&self, keys: &[Key]) -> Result<Vec<Entry>, StoreError> {
        let mut rows = Vec::new();
        for chunk in keys.chunks(500) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let sql = format!("SELECT {COLUMNS} FROM backstop_cooldowns WHERE key IN ({marks})");
            let found = self.with_retries(|conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                stmt.query_map(params_from_iter(chunk.iter().map(Key::as_str)), read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })?;
            rows.extend(found);
        }
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_entry(&self.location))
            .collect())
    }

    fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let rows = self.with_retries(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM backstop_cooldowns ORDER BY key"
            ))?;
            stmt.query_map([], read_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_entry(&self.location))
            .collect())
    }

    fn remove(&self, key: &Key) -> Result<bool, StoreError> {
        self.with_retries(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM backstop_cooldowns WHERE key = $1",
                [key.as_str()],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    fn remove_all(&self) -> Result<u64, StoreError> {
        self.with_retries(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute("DELETE FROM backstop_cooldowns", [])?;
            tx.commit()?;
            Ok(n as u64)
        })
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}
