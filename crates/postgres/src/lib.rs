//! The PostgreSQL plumbing every backstop store shares.
//!
//! - [`Database::connect`]: reads a `postgres://` URL and sets what a fleet
//!   needs that libpq leaves off: a connect timeout, TCP keepalives and a
//!   TCP user timeout, so that a cut network ends a call within about half
//!   a minute instead of the kernel's quarter of an hour. Nothing connects
//!   until the first call.
//! - [`Database::with_client`]: runs a call on one of a few connections
//!   (the sync client does one thing at a time, so a single connection
//!   behind a mutex would serialise every thread). A connection the server
//!   dropped (a restart, a cut) is re-established and the call run again,
//!   once; deadlocks and serialization failures are retried a few times.
//! - [`Database::migrate`]: each component keeps its version in
//!   `backstop_schema` (`component`, `version`), the table every backstop
//!   component shares in one database, SQLite or PostgreSQL; migrations run
//!   under one advisory lock, so processes starting together do not race.
//! - [`SessionLock`]: a session-level advisory lock on a connection of its
//!   own, to choose one runner among many machines; when its holder dies
//!   (or loses the database), the server releases it and another takes it.
//! - [`Database::location`]: `postgres://host:port/db`, never a user or a
//!   password.
//!
//! ```no_run
//! use backstop_postgres::Database;
//!
//! let db = Database::connect("postgres://backstop@db.internal/ops", 4)?;
//! db.migrate("demo", &["CREATE TABLE t (x BIGINT)"])?;
//! let n: i64 = db.with_client(|c| c.query_one("SELECT count(*) FROM t", &[]).map(|r| r.get(0)))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

pub use postgres;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, Config, NoTls, Row, Statement, Transaction};

/// Creates the table of component versions when missing. The same
/// statement serves SQLite.
pub const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS backstop_schema (
    component TEXT PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
)";

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
const CONFLICT_RETRIES: u32 = 5;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL cannot be read.
    #[error("{location} is not a PostgreSQL URL backstop can read")]
    Url {
        /// What can be shown of it.
        location: String,
        /// Why.
        #[source]
        source: postgres::Error,
    },
    /// The server could not be reached, or dropped the connection.
    #[error("cannot reach {location}")]
    Unreachable {
        /// `postgres://host:port/db`.
        location: String,
        /// Why.
        #[source]
        source: postgres::Error,
    },
    /// The server answered and refused the connection: the role, its
    /// password or its right to connect (SQLSTATE class 28). Trying again
    /// does not help.
    #[error("{location} refused the credentials")]
    Refused {
        /// `postgres://host:port/db`.
        location: String,
        /// Why.
        #[source]
        source: postgres::Error,
    },
    /// The database holds a schema newer than this backstop knows.
    #[error(
        "{location} has schema version {found}, newer than the {supported} this backstop knows"
    )]
    TooNew {
        /// `postgres://host:port/db`.
        location: String,
        /// The version found.
        found: i64,
        /// The newest version known here.
        supported: i64,
    },
    /// A statement failed.
    #[error("{location} failed")]
    Failed {
        /// `postgres://host:port/db`.
        location: String,
        /// Why.
        #[source]
        source: postgres::Error,
    },
}

impl OpenError {
    /// Whether trying again later may succeed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, OpenError::Unreachable { .. })
    }
}

/// Why a call through [`Database::with_client`] failed.
#[derive(Debug)]
pub enum Failure<E> {
    /// No connection could be made.
    Unreachable(postgres::Error),
    /// The connection was lost during the call, and again after
    /// reconnecting.
    Lost(E),
    /// The call failed otherwise.
    Failed(E),
}

impl<E> std::fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Unreachable(_) => "cannot connect to PostgreSQL",
            Failure::Lost(_) => "the connection to PostgreSQL was lost",
            Failure::Failed(_) => "a PostgreSQL call failed",
        })
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Failure<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Unreachable(e) => Some(e),
            Failure::Lost(e) | Failure::Failed(e) => Some(e),
        }
    }
}

/// An error that may carry a PostgreSQL error, so that deadlocks and
/// serialization failures can be told apart and retried.
pub trait MaybePostgres {
    /// The PostgreSQL error inside, if any.
    fn postgres(&self) -> Option<&postgres::Error>;

    /// A deadlock or a serialization failure: running the transaction
    /// again may succeed.
    fn is_conflict(&self) -> bool {
        self.postgres()
            .and_then(postgres::Error::code)
            .is_some_and(|c| {
                *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
            })
    }
}

impl MaybePostgres for postgres::Error {
    fn postgres(&self) -> Option<&postgres::Error> {
        Some(self)
    }
}

/// Whether a failed connection was refused by the server for who asked
/// (SQLSTATE class 28: invalid authorization specification, a wrong
/// password), rather than not made.
fn refused(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| c.code().starts_with("28"))
}

/// A PostgreSQL database reached through a few connections.
pub struct Database {
    config: Config,
    pool: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    location: String,
}

impl Database {
    /// Reads `url` (`postgres://user@host:port/db?options`) and keeps up to
    /// `connections` (at least 1) open once used. Connects to nothing yet.
    pub fn connect(url: &str, connections: usize) -> Result<Database, OpenError> {
        let mut config: Config = url.trim().parse().map_err(|source| OpenError::Url {
            location: "postgres://(unreadable URL)".to_owned(),
            source,
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
        let location = describe(&config);
        Ok(Database {
            config,
            pool: (0..connections.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            location,
        })
    }

    /// `postgres://host:port/db`, without user or password.
    pub fn location(&self) -> &str {
        &self.location
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
    /// up to five times. `f` may therefore run more than once: what it does
    /// must be whole transactions.
    pub fn with_client<T, E: MaybePostgres>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, E>,
    ) -> Result<T, Failure<E>> {
        self.with_conn(|conn| f(&mut conn.client))
    }

    /// Runs `f` in a transaction on a live connection, as
    /// [`Database::with_client`] runs a call: whole or not at all, and
    /// run again after a lost connection or a conflict. Statements are
    /// prepared once per connection and kept: one round trip each after the
    /// first.
    pub fn transaction<T, E: MaybePostgres + From<postgres::Error>>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, Failure<E>> {
        self.with_conn(|conn| {
            let mut tx = Tx {
                inner: conn.client.transaction()?,
                statements: &mut conn.statements,
            };
            let value = f(&mut tx)?;
            tx.inner.commit()?;
            Ok(value)
        })
    }

    /// Runs one statement on its own, as its own transaction, prepared once
    /// per connection: one round trip. Run again as
    /// [`Database::with_client`] runs a call.
    pub fn call(
        &self,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<Row>, Failure<postgres::Error>> {
        self.with_conn(|conn| {
            let statement = match conn.statements.get(sql) {
                Some(s) => s.clone(),
                None => {
                    let s = conn.client.prepare(sql)?;
                    conn.statements.insert(sql.to_owned(), s.clone());
                    s
                }
            };
            conn.client.query(&statement, params)
        })
    }

    fn with_conn<T, E: MaybePostgres>(
        &self,
        mut f: impl FnMut(&mut Conn) -> Result<T, E>,
    ) -> Result<T, Failure<E>> {
        let mut slot = self.slot();
        let mut reconnected = false;
        let mut conflicts = 0;
        loop {
            if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
                *slot = None;
                let client = self.config.connect(NoTls).map_err(Failure::Unreachable)?;
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
                        return Err(Failure::Lost(e));
                    }
                    tracing::debug!("the connection to {} was lost; reconnecting", self.location);
                    reconnected = true;
                }
                Err(e) if e.is_conflict() && conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    std::thread::sleep(Duration::from_millis(5 * u64::from(conflicts)));
                }
                Err(e) => return Err(Failure::Failed(e)),
            }
        }
    }

    /// Brings `component`'s schema up to date: applies the `migrations` it
    /// lacks (version N is the first N applied), each recorded in the
    /// transaction that applies it, under [`MIGRATION_LOCK`].
    pub fn migrate(&self, component: &str, migrations: &[&str]) -> Result<(), OpenError> {
        let supported = migrations.len() as i64;
        let found = self
            .with_client(|client| {
                let mut tx = client.transaction()?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock($1, $2)",
                    &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
                )?;
                tx.batch_execute(SCHEMA_TABLE)?;
                let version: i64 = tx
                    .query_opt(
                        "SELECT version FROM backstop_schema WHERE component = $1",
                        &[&component],
                    )?
                    .map(|r| r.get(0))
                    .unwrap_or(0);
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

    /// Closes the connections of this pool.
    fn take_clients(&mut self) -> Vec<Client> {
        self.pool
            .iter_mut()
            .filter_map(|slot| slot.get_mut().unwrap_or_else(|p| p.into_inner()).take())
            .map(|conn| conn.client)
            .collect()
    }

    fn open_error(&self, e: Failure<postgres::Error>) -> OpenError {
        let location = self.location.clone();
        match e {
            Failure::Unreachable(source) if refused(&source) => {
                OpenError::Refused { location, source }
            }
            Failure::Unreachable(source) | Failure::Lost(source) => {
                OpenError::Unreachable { location, source }
            }
            Failure::Failed(source) => OpenError::Failed { location, source },
        }
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
        .name("backstop-postgres-close".to_owned())
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
        match got {
            Ok(row) => {
                state.held = row.get(0);
                Ok(state.held)
            }
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
    use super::*;

    #[test]
    fn locations_show_no_user_or_password() {
        let db = Database::connect("postgres://u:hunter2@db.internal:6543/ops", 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(db.location(), "postgres://db.internal:6543/ops");
        let err = Database::connect("postgres://u:hunter2@db:notaport/x", 1)
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
        let db = Database::connect(&format!("postgres://u:hunter2@127.0.0.1:{port}/db"), 1)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = db
            .migrate("x", &[])
            .err()
            .unwrap_or_else(|| panic!("nothing listens"));
        assert!(err.is_temporary(), "{err}");
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

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
