//! The SQLite plumbing every backstop store shares.
//!
//! - [`Database::open`]: creates the file's directory readable by the user
//!   only, turns on WAL (readers never wait for the writer) and
//!   `synchronous=FULL`, sets a busy timeout, and brings one component's
//!   schema up to date.
//! - [`Database::with_retries`]: runs a call on the connection, retrying
//!   with jittered backoff while other processes hold the write lock, so
//!   that many processes sharing the file wait their turn instead of
//!   failing with "database is locked". Write transactions should begin
//!   `IMMEDIATE`: a deferred one that later needs the lock gets "busy"
//!   without waiting.
//! - Migrations: each component keeps its version in `backstop_schema`
//!   (`component`, `version`), the table every backstop component shares in
//!   one database, SQLite or PostgreSQL.
//!
//! ```
//! use backstop_sqlite::Database;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let db = Database::open(dir.path().join("a/b.db"), "demo", &["CREATE TABLE t (x BIGINT)"]).unwrap();
//! let n: i64 = db
//!     .with_retries(|conn| conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
//!     .unwrap();
//! assert_eq!(n, 0);
//! ```

use std::error::Error as StdError;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backstop_core::Policy;
pub use rusqlite;
use rusqlite::{Connection, ErrorCode, OptionalExtension, TransactionBehavior};

/// How long SQLite itself waits for another writer before reporting busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Creates the table of component versions when missing. The same
/// statement serves PostgreSQL.
pub const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS backstop_schema (
    component TEXT PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
)";

/// One SQLite file, one connection, shared by the threads of a process.
pub struct Database {
    conn: Mutex<Connection>,
    location: String,
}

/// Why opening failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file or its directory could not be opened or created.
    #[error("cannot open {location}")]
    Open {
        /// `sqlite:PATH`.
        location: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Other writers held the file for longer than backstop waits.
    #[error("{location} stayed locked by other processes for {}", backstop_core::HumanDuration(*waited))]
    Busy {
        /// `sqlite:PATH`.
        location: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The file holds a schema newer than this backstop knows.
    #[error(
        "{location} has schema version {found}, newer than the {supported} this backstop knows"
    )]
    TooNew {
        /// `sqlite:PATH`.
        location: String,
        /// The version found.
        found: i64,
        /// The newest version known here.
        supported: i64,
    },
    /// A statement failed.
    #[error("{location} failed")]
    Failed {
        /// `sqlite:PATH`.
        location: String,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
}

/// Why a call through [`Database::with_retries`] failed.
#[derive(Debug)]
pub enum Retried<E> {
    /// The lock stayed taken for this long.
    Busy {
        /// How long it waited.
        waited: Duration,
    },
    /// The call failed otherwise.
    Failed(E),
}

/// An error that may be SQLite saying another writer holds the lock.
pub trait MaybeBusy {
    /// The SQLite error inside, if any.
    fn sqlite(&self) -> Option<&rusqlite::Error>;

    /// Whether it is "busy" or "locked".
    fn is_busy(&self) -> bool {
        self.sqlite().is_some_and(|e| {
            matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            )
        })
    }
}

impl MaybeBusy for rusqlite::Error {
    fn sqlite(&self) -> Option<&rusqlite::Error> {
        Some(self)
    }
}

impl Database {
    /// Opens (creating if needed, directory included) the file at `path`
    /// and applies the `migrations` of `component` it lacks; version N is
    /// the first N applied, each in the transaction that records it.
    pub fn open(
        path: impl AsRef<Path>,
        component: &str,
        migrations: &[&str],
    ) -> Result<Database, OpenError> {
        let path = path.as_ref();
        let location = format!("sqlite:{}", path.display());
        let open_err = |e: Box<dyn StdError + Send + Sync>| OpenError::Open {
            location: location.clone(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(|e| open_err(Box::new(e)))?;
        }
        let conn = Connection::open(path).map_err(|e| match why_unopenable(path) {
            // SQLite says only "unable to open database file": say why.
            Some(os) => open_err(Box::new(os)),
            None => open_err(Box::new(e)),
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| open_err(Box::new(e)))?;
        let db = Database {
            conn: Mutex::new(conn),
            location,
        };
        db.with_retries(|conn| {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
            conn.execute_batch("PRAGMA synchronous = FULL")
        })
        .map_err(|e| db.open_error(e))?;
        db.migrate(component, migrations)?;
        Ok(db)
    }

    /// `sqlite:PATH`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn open_error(&self, e: Retried<rusqlite::Error>) -> OpenError {
        match e {
            Retried::Busy { waited } => OpenError::Busy {
                location: self.location.clone(),
                waited,
            },
            Retried::Failed(source) => OpenError::Failed {
                location: self.location.clone(),
                source,
            },
        }
    }

    fn migrate(&self, component: &str, migrations: &[&str]) -> Result<(), OpenError> {
        let supported = migrations.len() as i64;
        // The common case, a schema already up to date, needs no write
        // lock: some commands open the file on every call.
        let current = self
            .with_retries(|conn| {
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
            })
            .map_err(|e| self.open_error(e))?;
        if current == Some(supported) {
            return Ok(());
        }
        let found = self
            .with_retries(|conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
                tx.commit()?;
                Ok(version)
            })
            .map_err(|e| self.open_error(e))?;
        if found > supported {
            return Err(OpenError::TooNew {
                location: self.location.clone(),
                found,
                supported,
            });
        }
        Ok(())
    }

    /// Runs `f` on the connection, retrying with jittered backoff (20 ms
    /// doubling to 1 s, 12 tries) while the database is busy or locked.
    /// `f` may run more than once, so what it does must be whole
    /// transactions.
    pub fn with_retries<T, E: MaybeBusy>(
        &self,
        mut f: impl FnMut(&mut Connection) -> Result<T, E>,
    ) -> Result<T, Retried<E>> {
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
                Err(e) if e.is_busy() => match delays.next() {
                    Some(delay) => std::thread::sleep(delay),
                    None => {
                        return Err(Retried::Busy {
                            waited: started.elapsed(),
                        });
                    }
                },
                Err(e) => return Err(Retried::Failed(e)),
            }
        }
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
    use super::*;

    const V2: &[&str] = &[
        "CREATE TABLE a (x BIGINT)",
        "CREATE TABLE b (y BIGINT); INSERT INTO b VALUES (1)",
    ];

    #[test]
    fn migrates_each_component_once_and_refuses_newer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/x.db");
        Database::open(&path, "one", &V2[..1]).unwrap();
        let db = Database::open(&path, "one", V2).unwrap();
        Database::open(&path, "other", &["CREATE TABLE c (z BIGINT)"]).unwrap();
        let rows: Vec<(String, i64)> = db
            .with_retries(|conn| {
                conn.prepare("SELECT component, version FROM backstop_schema ORDER BY component")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()
            })
            .unwrap();
        assert_eq!(rows, [("one".to_owned(), 2), ("other".to_owned(), 1)]);
        let n: i64 = db
            .with_retries(|conn| conn.query_row("SELECT count(*) FROM b", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 1, "applied once");
        match Database::open(&path, "one", &V2[..1]) {
            Err(OpenError::TooNew {
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
        let err = Database::open(file.join("x.db"), "one", V2).err().unwrap();
        assert!(matches!(err, OpenError::Open { .. }), "{err}");
    }
}
