//! The ledger in a SQLite file: the default, for one machine.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backstop_core::Policy;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior, params_from_iter};

use super::{COLUMNS, COMPONENT, Change, MIGRATIONS, Row, SCHEMA_TABLE, Store, StoreError, UPSERT};
use crate::{Entry, Key};

/// How long SQLite itself waits for another writer before reporting busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// A SQLite ledger.
///
/// WAL mode (readers never wait for the writer), `synchronous=FULL`, every
/// write transaction begun `IMMEDIATE` (a deferred transaction that later
/// needs the write lock gets "busy" without waiting), a busy timeout, and on
/// top of it retries with jittered backoff: many processes sharing the file
/// wait their turn instead of failing with "database is locked".
pub struct SqliteStore {
    conn: Mutex<Connection>,
    location: String,
}

impl SqliteStore {
    /// Opens (creating if needed, directory included) the ledger at `path`
    /// and brings its schema up to date.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let location = format!("sqlite:{}", path.display());
        let open_err = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            location: location.clone(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| open_err(Box::new(e)))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(Box::new(e)))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_err(Box::new(e)))?;
        let store = SqliteStore {
            conn: Mutex::new(conn),
            location,
        };
        store.with_retries(|conn| {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.execute_batch("PRAGMA synchronous = FULL")
        })?;
        store.migrate()?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.location.trim_start_matches("sqlite:"))
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let supported = MIGRATIONS.len() as i64;
        // The common case, a ledger already up to date, needs no write lock:
        // `pick` opens the ledger on every call.
        let current = self.with_retries(|conn| {
            let has_table = conn
                .query_row(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'backstop_schema'",
                    [],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !has_table {
                return Ok(None);
            }
            conn.query_row(
                "SELECT version FROM backstop_schema WHERE component = $1",
                [COMPONENT],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })?;
        if current == Some(supported) {
            return Ok(());
        }
        let found = self.with_retries(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute_batch(SCHEMA_TABLE)?;
            let version: i64 = tx
                .query_row(
                    "SELECT version FROM backstop_schema WHERE component = $1",
                    [COMPONENT],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            if version > supported {
                return Ok(version);
            }
            for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO backstop_schema (component, version) VALUES ($1, $2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    rusqlite::params![COMPONENT, n as i64 + 1],
                )?;
            }
            tx.commit()?;
            Ok(version)
        })?;
        if found > supported {
            return Err(StoreError::TooNew {
                location: self.location.clone(),
                found,
                supported,
            });
        }
        Ok(())
    }

    /// Runs `f`, retrying while the database is busy or locked.
    fn with_retries<T>(
        &self,
        mut f: impl FnMut(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let policy = Policy::api()
            .max_attempts(12)
            .initial_delay(Duration::from_millis(20))
            .max_delay(Duration::from_secs(1));
        let mut delays = policy.delays();
        let started = Instant::now();
        let mut conn = self.lock();
        loop {
            match f(&mut conn) {
                Ok(v) => return Ok(v),
                Err(e) if is_busy(&e) => match delays.next() {
                    Some(delay) => std::thread::sleep(delay),
                    None => {
                        return Err(StoreError::Busy {
                            location: self.location.clone(),
                            waited: started.elapsed(),
                        });
                    }
                },
                Err(e) => {
                    return Err(StoreError::Failed {
                        location: self.location.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Creates `dir` (and its parents) readable by the user only: the ledger
/// says which credentials were refused and when.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        key: r.get(0)?,
        reason: r.get(1)?,
        until_ms: r.get(2)?,
        source: r.get(3)?,
        last_error: r.get(4)?,
        failures: r.get(5)?,
        fingerprint: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
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
