//! SQLite: one file, for one machine.
//!
//! - [`Database::open`]: creates the file's directory readable by the user
//!   only, turns on WAL (readers never wait for the writer) and
//!   `synchronous=FULL`, sets a busy timeout, and brings one component's
//!   schema up to date.
//! - [`Database::run`] and [`Database::transaction`]: run a call on the
//!   connection, retrying with jittered backoff while other processes hold
//!   the write lock, so that many processes sharing the file wait their
//!   turn instead of failing with "database is locked". Write
//!   transactions begin `IMMEDIATE`: a deferred one that later needs the
//!   lock gets "busy" without waiting.
//!
//! Every call blocks the calling thread.
//!
//! ```
//! use backstop_store::{StoreError, sqlite::Database};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = Database::open(dir.path().join("a/b.db"), "demo", &["CREATE TABLE t (x BIGINT)"])
//!     .map_err(|e: StoreError| e)
//!     .unwrap();
//! let n: Result<i64, StoreError> =
//!     db.run(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)));
//! assert_eq!(n.unwrap(), 0);
//! ```

use std::error::Error as StdError;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backstop_core::Policy;
pub use rusqlite;
use rusqlite::{Connection, ErrorCode, OptionalExtension, Transaction, TransactionBehavior};

use crate::{Place, SCHEMA_TABLE, StoreError, TxError};

/// How long SQLite itself waits for another writer before reporting busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// One SQLite file, one connection, shared by the threads of a process.
pub struct Database {
    conn: Mutex<Connection>,
    place: Place,
}

/// Whether SQLite says another writer holds the lock ("busy", "locked").
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl Database {
    /// Opens (creating if needed, directory included) the file at `path`
    /// for `component` and applies the `migrations` it lacks; version N is
    /// the first N applied, each in the transaction that records it.
    ///
    /// A file or directory that cannot be created or opened is
    /// [`StoreError::Unusable`]; a file still locked after the retries,
    /// [`StoreError::Busy`]; a schema newer than `migrations`,
    /// [`StoreError::TooNew`].
    pub fn open<R>(
        path: impl AsRef<Path>,
        component: &'static str,
        migrations: &[&str],
    ) -> Result<Database, StoreError<R>> {
        let path = path.as_ref();
        let place = Place::new(component, format!("sqlite:{}", path.display()));
        let unusable = |e: Box<dyn StdError + Send + Sync>| place.unusable(e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| unusable(Box::new(e)))?;
        }
        let conn = Connection::open(path).map_err(|e| match why_unopenable(path) {
            // SQLite says only "unable to open database file": say why.
            Some(os) => unusable(Box::new(os)),
            None => unusable(Box::new(e)),
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| unusable(Box::new(e)))?;
        let db = Database {
            conn: Mutex::new(conn),
            place,
        };
        db.run::<_, R, _>(|conn| {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.execute_batch("PRAGMA synchronous = FULL")
        })?;
        db.migrate(migrations)?;
        Ok(db)
    }

    /// `sqlite:PATH`.
    pub fn location(&self) -> &str {
        self.place.location()
    }

    /// Which store this is, where: to tell its errors.
    pub fn place(&self) -> &Place {
        &self.place
    }

    fn migrate<R>(&self, migrations: &[&str]) -> Result<(), StoreError<R>> {
        let component = self.place.component();
        let supported = migrations.len() as i64;
        // The common case, a schema already up to date, needs no write
        // lock: some commands open the file on every call.
        let current = self.run::<_, R, _>(|conn| {
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
                "SELECT version FROM backstop_schema WHERE component = ?1",
                [component],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })?;
        if current == Some(supported) {
            return Ok(());
        }
        let found = self.transaction::<_, R, _>(TransactionBehavior::Immediate, |tx| {
            tx.execute_batch(SCHEMA_TABLE)?;
            let version: i64 = tx
                .query_row(
                    "SELECT version FROM backstop_schema WHERE component = ?1",
                    [component],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            if version > supported {
                return Ok(version);
            }
            let done = usize::try_from(version.max(0)).unwrap_or(usize::MAX);
            for (n, sql) in migrations.iter().enumerate().skip(done) {
                tx.execute_batch(sql)?;
                tx.execute(
                    "INSERT INTO backstop_schema (component, version) VALUES (?1, ?2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    rusqlite::params![component, n as i64 + 1],
                )?;
            }
            Ok::<_, rusqlite::Error>(version)
        })?;
        if found > supported {
            return Err(self.place.too_new(found, supported));
        }
        Ok(())
    }

    /// Runs `f` on the connection, retrying with jittered backoff (20 ms
    /// doubling to 1 s, 12 tries) while the database is busy or locked;
    /// then [`StoreError::Busy`]. `f` may run more than once, so what it
    /// does must be whole transactions. A refusal from `f` is
    /// [`StoreError::Rejected`], any other failure [`StoreError::Failed`].
    pub fn run<T, R, E: Into<TxError<rusqlite::Error, R>>>(
        &self,
        mut f: impl FnMut(&mut Connection) -> Result<T, E>,
    ) -> Result<T, StoreError<R>> {
        let policy = Policy::api()
            .with_max_attempts(12)
            .with_initial_delay(Duration::from_millis(20))
            .with_max_delay(Duration::from_secs(1));
        let mut delays = policy.delays();
        let started = Instant::now();
        let mut conn = self.lock();
        loop {
            match f(&mut conn).map_err(Into::into) {
                Ok(v) => return Ok(v),
                Err(TxError::Driver(e)) if is_busy(&e) => match delays.next() {
                    Some(delay) => std::thread::sleep(delay),
                    None => {
                        return Err(self.place.busy(started.elapsed()));
                    }
                },
                Err(TxError::Driver(e)) => return Err(self.place.failed(e)),
                Err(TxError::Unreadable(e)) => return Err(self.place.failed(e)),
                Err(TxError::Rejected(r)) => return Err(StoreError::Rejected(r)),
            }
        }
    }

    /// Runs `f` in a transaction begun with `behavior` (`Immediate` for a
    /// write: one writer at a time; `Deferred` for a read: one consistent
    /// snapshot), committed when `f` succeeds, as [`Database::run`] runs a
    /// call.
    pub fn transaction<T, R, E: Into<TxError<rusqlite::Error, R>>>(
        &self,
        behavior: TransactionBehavior,
        mut f: impl FnMut(&Transaction<'_>) -> Result<T, E>,
    ) -> Result<T, StoreError<R>> {
        self.run(|conn| {
            let tx = conn.transaction_with_behavior(behavior)?;
            let value = f(&tx).map_err(Into::into)?;
            tx.commit()?;
            Ok::<_, TxError<rusqlite::Error, R>>(value)
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the operating system says about opening `path` for writing, when
/// it refuses: "Permission denied", "Is a directory". Creates nothing
/// that is left behind.
fn why_unopenable(path: &Path) -> Option<std::io::Error> {
    let existed = path.symlink_metadata().is_ok();
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(!existed)
        .open(path);
    match opened {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            None
        }
        Err(e) => Some(e),
    }
}

/// Creates `dir` (and its parents) readable by the user only: backstop's
/// state says which credentials were refused, and what was sent to which
/// node.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| {
        // "File exists" would not say which: name the file in the way.
        let in_the_way = dir
            .ancestors()
            .find(|a| a.metadata().is_ok_and(|m| !m.is_dir()));
        match in_the_way {
            Some(file) => std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is not a directory", file.display()),
            ),
            None => e,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    const V2: &[&str] = &[
        "CREATE TABLE a (x BIGINT)",
        "CREATE TABLE b (y BIGINT); INSERT INTO b VALUES (1)",
    ];

    #[test]
    fn migrates_each_component_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/x.db");
        Database::open::<Infallible>(&path, "one", &V2[..1]).unwrap();
        let db = Database::open::<Infallible>(&path, "one", V2).unwrap();
        Database::open::<Infallible>(&path, "other", &["CREATE TABLE c (z BIGINT)"]).unwrap();
        let rows: Vec<(String, i64)> = db
            .run::<_, Infallible, _>(|conn| {
                conn.prepare("SELECT component, version FROM backstop_schema ORDER BY component")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .unwrap();
        assert_eq!(rows, [("one".to_owned(), 2), ("other".to_owned(), 1)]);
        let n: i64 = db
            .run::<_, Infallible, _>(|conn| {
                conn.query_row("SELECT count(*) FROM b", [], |r| r.get(0))
            })
            .unwrap();
        assert_eq!(n, 1, "applied once");
        match Database::open::<Infallible>(&path, "one", &V2[..1]) {
            Err(StoreError::TooNew {
                found: 2,
                supported: 1,
                ..
            }) => {}
            other => panic!("{:?}", other.err()),
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("state"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }

    #[test]
    fn a_directory_that_cannot_be_made_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = Database::open::<Infallible>(file.join("x.db"), "one", V2)
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::Unusable { .. }), "{err}");
    }
}
