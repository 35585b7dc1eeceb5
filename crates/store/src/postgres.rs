//! PostgreSQL: one database for a fleet.
//!
//! - [`Database::connect`]: reads a `postgres://` URL and sets what a fleet
//!   needs that libpq leaves off: a connect timeout, TCP keepalives and a
//!   TCP user timeout, so that a cut network ends a call within about half
//!   a minute instead of the kernel's quarter of an hour. Nothing connects
//!   until the first call.
//! - [`Database::with_client`], [`Database::transaction`],
//!   [`Database::call`]: run a call on one of a few connections (the sync
//!   client does one thing at a time, so a single connection behind a
//!   mutex would serialise every thread). A connection the server dropped
//!   (a restart, a cut) is re-established and the call run again, once;
//!   deadlocks and serialization failures are run again a few times. Each
//!   run again waits a delay of [`backstop_core::Policy`] with full
//!   jitter, so that a fleet that lost its database together does not
//!   come back in lockstep.
//! - [`Database::migrate`]: each component keeps its version in
//!   `backstop_schema` ([`SCHEMA_TABLE`]); migrations run under one
//!   advisory lock, so processes starting together do not race.
//! - [`SessionLock`]: a session-level advisory lock on a connection of its
//!   own, to choose one runner among many machines; when its holder dies
//!   (or loses the database), the server releases it and another takes it.
//! - [`Database::location`]: `postgres://host:port/db`, never a user or a
//!   password.
//!
//! Every call blocks the calling thread.
//!
//! The pool and the statement cache are written here rather than taken
//! from deadpool-postgres or r2d2_postgres. The stores' calls block, and
//! deadpool-postgres is async (each call would need a runtime to block
//! on); r2d2_postgres keeps no prepared statements, which the dispatcher's
//! one round trip per statement relies on. The pool is a handful of
//! slots, each owning its client and the statements prepared on it; a
//! lost connection is re-established inside the slot, so that the call
//! that found it lost runs again on the new one. Measured with the
//! statement cache turned off (as r2d2_postgres would run), the fan-out
//! benchmark drains a backlog at 0.72× and runs live at 0.92× (see
//! docs/benchmarks.md): more than the 5 % a replacement may cost.
//!
//! ```no_run
//! use backstop_store::{StoreError, postgres::Database};
//!
//! let db = Database::connect("postgres://backstop@db.internal/ops", "demo", 4)?;
//! db.migrate(&["CREATE TABLE t (x BIGINT)"])?;
//! let n: i64 = db.with_client(|c| c.query_one("SELECT count(*) FROM t", &[])?.try_get(0))?;
//! # Ok::<(), StoreError>(())
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use backstop_core::Policy;
pub use postgres;
use postgres::error::SqlState;
use postgres::types::{FromSql, ToSql, Type};
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

use crate::{ColumnError, Place, SCHEMA_TABLE, StoreError, TxError};

/// Column `idx` of `row` as `T`. A column missing, or of another type than
/// `T` (a table changed by hand), is a [`ColumnError`] naming it, where
/// `Row::get` would panic.
pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, ColumnError> {
    row.try_get(idx).map_err(|e| ColumnError {
        column: row
            .columns()
            .get(idx)
            .map_or_else(|| format!("#{idx}"), |c| c.name().to_owned()),
        source: Box::new(e),
    })
}

/// The advisory lock every component's migrations take: one for all, since
/// two components creating `backstop_schema` at once would collide.
pub const MIGRATION_LOCK: (i32, i32) = (0x626c, 0);

/// How long connecting may take, unless the URL says otherwise.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sent data may stay unacknowledged before the connection is
/// given up, unless the URL says otherwise: a network that is cut, not
/// closed, ends a call this soon.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a call that hit a deadlock or a serialization failure
/// runs again.
pub const CONFLICT_RETRIES: u32 = 5;

/// The delays before a call runs again after a lost connection or a
/// conflict: 5 ms doubling to 200 ms, full jitter, so that the processes
/// of a fleet that hit the same conflict, or lost the same server, spread
/// out instead of colliding again.
pub fn rerun_policy() -> Policy {
    Policy::api()
        .with_max_attempts(CONFLICT_RETRIES + 2)
        .with_initial_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(200))
}

/// A deadlock or a serialization failure: running the transaction again
/// may succeed.
fn is_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// Whether a failed connection was refused by the server for who asked
/// (SQLSTATE class 28: invalid authorization specification, a wrong
/// password), rather than not made.
fn refused(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("28"))
}

/// The server answered and refused the connection: the role, its password
/// or its right to connect. Trying again does not help.
#[derive(Debug, thiserror::Error)]
#[error("{location} refused the credentials")]
struct Refused {
    location: String,
    #[source]
    source: postgres::Error,
}

/// A PostgreSQL database reached through a few connections.
pub struct Database {
    config: Config,
    pool: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    place: Place,
}

/// Why a call failed, before it is told as a [`StoreError`].
enum CallFailure<E> {
    /// No connection could be made.
    Unreachable(postgres::Error),
    /// The connection was lost during the call, and again after
    /// reconnecting.
    Lost(E),
    /// The call failed otherwise.
    Failed(E),
}

impl Database {
    /// Reads `url` (`postgres://user@host:port/db?options`) for
    /// `component` and keeps up to `connections` (at least 1) open once
    /// used. Connects to nothing yet. A URL that cannot be read is
    /// [`StoreError::Location`], which shows nothing of it.
    pub fn connect<R>(
        url: &str,
        component: &'static str,
        connections: usize,
    ) -> Result<Database, StoreError<R>> {
        let mut config: Config =
            url.trim()
                .parse()
                .map_err(|source: postgres::Error| StoreError::Location {
                    component,
                    location: "postgres://(unreadable URL)".to_owned(),
                    source: Box::new(source),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            config.keepalives_idle(Duration::from_secs(15));
        }
        let place = Place::new(component, describe(&config));
        Ok(Database {
            config,
            pool: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            place,
        })
    }

    /// `postgres://host:port/db`, without user or password.
    pub fn location(&self) -> &str {
        self.place.location()
    }

    /// Which store this is, where: to tell its errors.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// A connection slot: a free one if there is one, else the next in
    /// turn.
    fn slot(&self) -> MutexGuard<'_, Option<Conn>> {
        let n = self.pool.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.pool[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.pool[start].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a live connection. A connection found closed is
    /// re-established first; one lost during `f` is re-established and `f`
    /// run again, once. A deadlock or serialization failure runs `f` again
    /// up to [`CONFLICT_RETRIES`] times. Each run again waits a jittered
    /// delay of [`rerun_policy`]. `f` may therefore run more than once:
    /// what it does must be whole transactions.
    ///
    /// No connection: [`StoreError::Open`] ([`StoreError::Failed`] when the
    /// server refused the credentials); a refusal from `f`:
    /// [`StoreError::Rejected`]; a lost connection, twice:
    /// [`StoreError::Open`]; anything else: [`StoreError::Failed`].
    pub fn with_client<T, R, E: Into<TxError<postgres::Error, R>>>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, E>,
    ) -> Result<T, StoreError<R>> {
        self.with_conn(|conn| f(&mut conn.client).map_err(Into::into))
    }

    /// Runs `f` in a transaction on a live connection, as
    /// [`Database::with_client`] runs a call: whole or not at all, and
    /// run again after a lost connection or a conflict. Statements are
    /// prepared once per connection and kept: one round trip each after the
    /// first.
    pub fn transaction<T, R, E: Into<TxError<postgres::Error, R>>>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, StoreError<R>> {
        self.with_conn(|conn| {
            let mut tx = Tx {
                inner: conn.client.transaction()?,
                statements: &mut conn.statements,
            };
            let value = f(&mut tx).map_err(Into::into)?;
            tx.inner.commit()?;
            Ok(value)
        })
    }

    /// Runs one statement on its own, as its own transaction, prepared once
    /// per connection: one round trip. Run again as
    /// [`Database::with_client`] runs a call. A statement the server no
    /// longer accepts as prepared (a table altered since: "cached plan must
    /// not change result type") is prepared again, once.
    pub fn call<R>(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, StoreError<R>> {
        self.with_conn(|conn| {
            let statement = match conn.statements.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = conn.client.prepare(sql)?;
                    conn.statements.insert(sql.to_owned(), s.clone());
                    s
                }
            };
            match conn.client.query(&statement, params) {
                Err(e) if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) => {
                    let s = conn.client.prepare(sql)?;
                    conn.statements.insert(sql.to_owned(), s.clone());
                    Ok(conn.client.query(&s, params)?)
                }
                answer => Ok(answer?),
            }
        })
    }

    fn with_conn<T, R>(
        &self,
        f: impl FnMut(&mut Conn) -> Result<T, TxError<postgres::Error, R>>,
    ) -> Result<T, StoreError<R>> {
        self.run(f).map_err(|e| self.store_error(e))
    }

    fn run<T, R>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, TxError<postgres::Error, R>>,
    ) -> Result<T, CallFailure<TxError<postgres::Error, R>>> {
        let policy = rerun_policy();
        let mut delays = policy.delays();
        let mut slot = self.slot();
        let mut reconnected = false;
        let mut conflicts = 0;
        loop {
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                *slot = None;
                let client = self
                    .config
                    .connect(NoTls)
                    .map_err(CallFailure::Unreachable)?;
                *slot = Some(Conn {
                    client,
                    statements: HashMap::new(),
                });
            }
            let Some(conn) = slot.as_mut() else {
                continue;
            };
            match f(conn) {
                Ok(v) => return Ok(v),
                Err(e) if conn.client.is_closed() => {
                    *slot = None;
                    if reconnected {
                        return Err(CallFailure::Lost(e));
                    }
                    tracing::debug!(
                        "the connection to {} was lost; reconnecting",
                        self.place.location()
                    );
                    reconnected = true;
                }
                Err(e) if e.driver().is_some_and(is_conflict) && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                }
                Err(e) => return Err(CallFailure::Failed(e)),
            }
            if let Some(delay) = delays.next() {
                std::thread::sleep(delay);
            }
        }
    }

    fn store_error<R>(&self, e: CallFailure<TxError<postgres::Error, R>>) -> StoreError<R> {
        let place = &self.place;
        match e {
            CallFailure::Unreachable(source) if refused(&source) => place.failed(Refused {
                location: place.location().to_owned(),
                source,
            }),
            CallFailure::Unreachable(source) | CallFailure::Lost(TxError::Driver(source)) => {
                place.unreachable(source)
            }
            CallFailure::Failed(TxError::Driver(source)) => place.failed(source),
            CallFailure::Lost(TxError::Unreadable(e))
            | CallFailure::Failed(TxError::Unreadable(e)) => place.failed(e),
            CallFailure::Lost(TxError::Rejected(r)) | CallFailure::Failed(TxError::Rejected(r)) => {
                StoreError::Rejected(r)
            }
        }
    }

    /// Brings this component's schema up to date: applies the
    /// `migrations` it lacks (version N is the first N applied), each
    /// recorded in the transaction that applies it, under
    /// [`MIGRATION_LOCK`]. A schema newer than `migrations` is
    /// [`StoreError::TooNew`].
    pub fn migrate<R>(&self, migrations: &[&str]) -> Result<(), StoreError<R>> {
        let component = self.place.component();
        let supported = migrations.len() as i64;
        let found = self.with_client::<_, R, _>(|client| {
            let mut tx = client.transaction()?;
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, $2)",
                &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
            )?;
            tx.batch_execute(SCHEMA_TABLE)?;
            let version: i64 = match tx.query_opt(
                "SELECT version FROM backstop_schema WHERE component = $1",
                &[&component],
            )? {
                Some(row) => row.try_get(0)?,
                None => 0,
            };
            if version > supported {
                return Ok(version);
            }
            let done = usize::try_from(version.max(0)).unwrap_or(usize::MAX);
            for (n, sql) in migrations.iter().enumerate().skip(done) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO backstop_schema (component, version) VALUES ($1, $2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    &[&component, &(n as i64 + 1)],
                )?;
            }
            tx.commit()?;
            Ok::<_, postgres::Error>(version)
        })?;
        if found > supported {
            return Err(self.place.too_new(found, supported));
        }
        Ok(())
    }

    /// Closes the connections of this pool.
    fn take_clients(&mut self) -> Vec<Client> {
        self.pool
            .iter_mut()
            .filter_map(|slot| slot.get_mut().unwrap_or_else(|p| p.into_inner()).take())
            .map(|conn| conn.client)
            .collect()
    }

    /// A session-level advisory lock on `(class, hashtext(current_schema()))`,
    /// held on a connection of its own: one lock per schema, so that fleets
    /// (and tests) in separate schemas of one database do not contend.
    pub fn session_lock(&self, class: i32) -> SessionLock {
        SessionLock {
            config: self.config.clone(),
            class,
            state: Mutex::new(Held {
                client: None,
                held: false,
            }),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        close_elsewhere(self.take_clients());
    }
}

/// Closes clients on a thread of their own: closing the sync client blocks
/// on its own small runtime, which tokio forbids on a thread that drives
/// an async runtime — where the last handle of a store is often dropped.
fn close_elsewhere(clients: Vec<Client>) {
    if clients.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("backstop-store-close".to_owned())
        .spawn(move || drop(clients));
    if let Err(e) = spawned {
        tracing::debug!("cannot close PostgreSQL connections on a thread of their own: {e}");
    }
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// A transaction whose statements are prepared once per connection.
pub struct Tx<'a> {
    inner: Transaction<'a>,
    statements: &'a mut HashMap<String, Statement>,
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl Tx<'_> {
    fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.inner.prepare(sql)?;
        self.statements.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    /// Runs a statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.execute(&statement, params)
    }

    /// Runs a query; its rows.
    pub fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.query(&statement, params)
    }

    /// Runs a query that returns exactly one row.
    pub fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.query_one(&statement, params)
    }

    /// Runs a query planned for these values and the tables as they are
    /// now, every time, in one round trip with nothing kept prepared: for a
    /// statement whose best plan depends on how large what it reads is. A
    /// plan kept from when a table was nearly empty scans all of it once it
    /// is not, until the server gathers statistics again (never, on a
    /// server without autovacuum). `params` carry their types.
    pub fn query_planned(
        &mut self,
        sql: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>, postgres::Error> {
        self.inner.query_typed(sql, params)
    }

    /// Runs a query that returns at most one row.
    pub fn query_opt(
        &mut self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<Row>, postgres::Error> {
        let statement = self.statement(sql)?;
        self.inner.query_opt(&statement, params)
    }
}

/// A session-level advisory lock: see [`Database::session_lock`].
pub struct SessionLock {
    config: Config,
    class: i32,
    state: Mutex<Held>,
}

struct Held {
    client: Option<Client>,
    held: bool,
}

/// How long a check that the lock's connection still lives may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl SessionLock {
    /// Takes the lock if it is free, or checks that this session still
    /// holds it. `Ok(true)` while held. An error means the database cannot
    /// be reached, and the lock is not held (the server releases a lock
    /// whose connection ends).
    pub fn hold(&self) -> Result<bool, postgres::Error> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = state.client.as_mut() {
            match client.is_valid(CHECK_TIMEOUT) {
                Ok(()) if state.held => return Ok(true),
                Ok(()) => {}
                Err(e) => {
                    state.client = None;
                    state.held = false;
                    tracing::debug!("the lock's connection was lost ({e})");
                }
            }
        }
        let client = match state.client.as_mut() {
            Some(c) => c,
            None => state.client.insert(self.config.connect(NoTls)?),
        };
        let got = client.query_one(
            "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
            &[&self.class],
        );
        match got.and_then(|row| row.try_get(0)) {
            Ok(held) => {
                state.held = held;
                Ok(held)
            }
            // A lock whose answer cannot be read is let go with its
            // connection.
            Err(e) => {
                state.client = None;
                state.held = false;
                Err(e)
            }
        }
    }

    /// Lets the lock go at once and closes its connection, for a clean
    /// stop. Blocks: call it where blocking is allowed.
    pub fn release(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.held
            && let Some(client) = state.client.as_mut()
        {
            // Closing alone would let it go too, but only once the server
            // notices.
            let _ = client.execute("SELECT pg_advisory_unlock_all()", &[]);
        }
        state.held = false;
        close_elsewhere(state.client.take().into_iter().collect());
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        close_elsewhere(state.client.take().into_iter().collect());
    }
}

/// `postgres://host:port/db`, without user or password.
pub fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
            #[cfg(unix)]
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    format!(
        "postgres://{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::error::Error as _;

    use super::*;

    #[test]
    fn locations_show_no_user_or_password() {
        let db =
            Database::connect::<Infallible>("postgres://u:hunter2@db.internal:6543/ops", "x", 2)
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.location(), "postgres://db.internal:6543/ops");
        let err = Database::connect::<Infallible>("postgres://u:hunter2@db:notaport/x", "x", 1)
            .err()
            .map(|e| format!("{e} {e:?}"))
            .unwrap_or_default();
        assert!(!err.is_empty() && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn an_unreachable_server_is_temporary_and_shows_no_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let db = Database::connect::<Infallible>(
            &format!("postgres://u:hunter2@127.0.0.1:{port}/db"),
            "x",
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let err = db
            .migrate::<Infallible>(&[])
            .err()
            .unwrap_or_else(|| panic!("nothing listens"));
        assert!(err.is_temporary(), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn reruns_wait_jittered_delays_below_the_cap() {
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..32 {
            let policy = rerun_policy().with_seed(seed);
            let delays: Vec<Duration> = policy.delays().collect();
            // Every conflict and the one reconnect wait.
            assert_eq!(delays.len(), CONFLICT_RETRIES as usize + 1);
            assert!(
                delays.iter().all(|d| *d <= Duration::from_millis(200)),
                "{delays:?}"
            );
            firsts.insert(delays[0]);
        }
        // Full jitter: processes that hit the same conflict spread out.
        assert!(firsts.len() > 16, "{firsts:?}");
    }

    #[test]
    fn a_conflict_runs_the_call_again_then_fails() {
        let schema = testing::TestSchema::new("store_conflict");
        let db = Database::connect::<Infallible>(schema.url(), "x", 1).unwrap();
        let mut runs = 0;
        let result = db.with_client::<(), Infallible, _>(|c| {
            runs += 1;
            c.batch_execute(
                "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
            )
        });
        match result {
            Err(StoreError::Failed { source, .. }) => {
                let code = source
                    .downcast_ref::<postgres::Error>()
                    .and_then(postgres::Error::code);
                assert_eq!(code, Some(&SqlState::T_R_SERIALIZATION_FAILURE));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(runs, CONFLICT_RETRIES + 1);
    }

    #[test]
    fn a_prepared_statement_survives_a_table_altered_under_it() {
        let schema = testing::TestSchema::new("store_altered");
        let db = Database::connect::<Infallible>(schema.url(), "x", 1).unwrap();
        db.with_client::<(), Infallible, _>(|c| {
            c.batch_execute("CREATE TABLE t (k TEXT, v BIGINT); INSERT INTO t VALUES ('a', 7)")
        })
        .unwrap();
        let sql = "SELECT v FROM t WHERE k = $1";
        let read = |db: &Database| -> String {
            let rows = db.call::<Infallible>(sql, &[&"a"]).unwrap();
            rows[0]
                .try_get::<_, i64>(0)
                .map(|v| v.to_string())
                .or_else(|_| rows[0].try_get::<_, String>(0))
                .unwrap()
        };
        assert_eq!(read(&db), "7");
        schema.exec("ALTER TABLE t ALTER COLUMN v TYPE TEXT");
        assert_eq!(read(&db), "7", "prepared again, not an error");
    }

    #[test]
    fn a_role_the_server_refuses_is_a_failure_that_says_so() {
        let url = testing::server_url();
        let (scheme, rest) = url.split_once("://").unwrap();
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        let db =
            Database::connect::<Infallible>(&format!("{scheme}://no_such_role_bs@{host}"), "x", 1)
                .unwrap();
        match db.migrate::<Infallible>(&[]) {
            Err(e @ StoreError::Failed { .. }) => {
                let cause = e.source().map(|c| c.to_string()).unwrap_or_default();
                assert!(cause.ends_with("refused the credentials"), "{cause}");
                assert!(!e.is_temporary());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod testing {
    //! A schema of its own for each test, on the PostgreSQL server the
    //! tests use: `BACKSTOP_TEST_POSTGRES`, default
    //! `postgres://postgres@127.0.0.1:5432/test`. A server that cannot be
    //! reached fails the test, loudly: tests that need PostgreSQL are
    //! never skipped.

    use std::sync::atomic::{AtomicU32, Ordering};

    use postgres::{Client, NoTls};

    /// The URL of the tests' server.
    pub fn server_url() -> String {
        std::env::var("BACKSTOP_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    /// A schema created for one test and dropped with it.
    pub struct TestSchema {
        admin: String,
        url: String,
        name: String,
    }

    impl TestSchema {
        /// Creates a fresh schema named after `prefix`, this process and a
        /// counter.
        ///
        /// # Panics
        /// When the server cannot be reached or the schema created: the
        /// test cannot go on, and must not pass quietly.
        pub fn new(prefix: &str) -> TestSchema {
            TestSchema::on(&server_url(), prefix)
        }

        /// [`TestSchema::new`] on the server at `admin`.
        ///
        /// # Panics
        /// As [`TestSchema::new`].
        pub fn on(admin: &str, prefix: &str) -> TestSchema {
            // On a thread of its own: the sync client cannot block a
            // thread that drives an async test.
            std::thread::scope(|s| s.spawn(|| TestSchema::create(admin, prefix)).join())
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
        }

        fn create(admin: &str, prefix: &str) -> TestSchema {
            static N: AtomicU32 = AtomicU32::new(0);
            let admin = admin.to_owned();
            let name = format!(
                "{prefix}_{}_{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            );
            let mut client = Client::connect(&admin, NoTls).unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is required for these tests and is not reachable at {admin}: {e}. \
                     Start it, or point BACKSTOP_TEST_POSTGRES at one."
                )
            });
            if let Err(e) = client.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
            )) {
                panic!("cannot create schema {name} at {admin}: {e}");
            }
            let url = with_schema(&admin, &name);
            TestSchema { admin, url, name }
        }

        /// A URL whose connections use this schema.
        pub fn url(&self) -> &str {
            &self.url
        }

        /// Where the server listens (to put a proxy in front of it).
        ///
        /// # Panics
        /// When the URL names no TCP address.
        pub fn server_addr(&self) -> std::net::SocketAddr {
            let config: Result<postgres::Config, _> = self.admin.parse();
            let found = config.ok().and_then(|c| {
                let port = c.get_ports().first().copied().unwrap_or(5432);
                match c.get_hosts().first()? {
                    postgres::config::Host::Tcp(host) => {
                        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
                            .ok()?
                            .next()
                    }
                    #[cfg(unix)]
                    postgres::config::Host::Unix(_) => None,
                }
            });
            found.unwrap_or_else(|| panic!("{} names no TCP address", self.admin))
        }

        /// This schema's URL with another host and port (a proxy's).
        pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
            let admin = match self.admin.split_once('@') {
                Some((user, rest)) => {
                    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("");
                    format!("{user}@{addr}{path}")
                }
                None => self.admin.clone(),
            };
            with_schema(&admin, &self.name)
        }

        /// Runs SQL in this schema.
        ///
        /// # Panics
        /// When it fails.
        pub fn exec(&self, sql: &str) {
            let result = std::thread::scope(|s| {
                s.spawn(|| Client::connect(&self.url, NoTls).and_then(|mut c| c.batch_execute(sql)))
                    .join()
            });
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{sql}: {e}"),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
    }

    fn with_schema(url: &str, schema: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-csearch_path%3D{schema}")
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            let (admin, name) = (&self.admin, &self.name);
            std::thread::scope(|s| {
                s.spawn(|| {
                    if let Ok(mut c) = Client::connect(admin, NoTls) {
                        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
                    }
                });
            });
        }
    }
}
