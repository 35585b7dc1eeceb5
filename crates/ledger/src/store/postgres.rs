//! The ledger in PostgreSQL: one ledger for many machines.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::{Client, Config, NoTls};

use super::{COLUMNS, COMPONENT, Change, MIGRATIONS, Row, SCHEMA_TABLE, Store, StoreError, UPSERT};
use crate::{Entry, Key};

/// The first key of every advisory lock the ledger takes ("bl"); the second
/// is 0 for migrations and the hash of the key for updates.
const LOCK_CLASS: i32 = 0x626c;

/// A PostgreSQL ledger.
///
/// Updates run in a transaction that first takes a transaction-scoped
/// advisory lock on the key, so concurrent writers of one key queue up
/// while writers of other keys go on. Migrations run under an advisory lock
/// too, so coordinators starting together do not race. A lost connection is
/// re-established on the next call.
pub struct PostgresStore {
    config: Config,
    client: Mutex<Option<Client>>,
    location: String,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db`)
    /// and brings its schema up to date. Connections time out after 10 s
    /// unless the URL says otherwise.
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut config: Config = url.parse().map_err(|e| StoreError::Open {
            location: "postgres://(unreadable URL)".to_owned(),
            source: Box::new(e),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let location = describe(&config);
        let store = PostgresStore {
            config,
            client: Mutex::new(None),
            location,
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Client>> {
        self.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a live connection, reconnecting once if the connection
    /// turns out to be gone.
    fn with_client<T>(
        &self,
        mut f: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut slot = self.lock();
        for attempt in 0..2 {
            if slot.as_ref().is_none_or(Client::is_closed) {
                let client = self.config.connect(NoTls).map_err(|e| StoreError::Open {
                    location: self.location.clone(),
                    source: Box::new(e),
                })?;
                *slot = Some(client);
            }
            let Some(client) = slot.as_mut() else {
                continue;
            };
            match f(client) {
                Ok(v) => return Ok(v),
                Err(e) if client.is_closed() && attempt == 0 => {
                    tracing::debug!(
                        "the connection to {} was lost ({e}); reconnecting",
                        self.location
                    );
                    *slot = None;
                }
                Err(e) => {
                    let lost = client.is_closed();
                    if lost {
                        *slot = None;
                    }
                    return Err(if lost {
                        StoreError::Open {
                            location: self.location.clone(),
                            source: Box::new(e),
                        }
                    } else {
                        StoreError::Failed {
                            location: self.location.clone(),
                            source: Box::new(e),
                        }
                    });
                }
            }
        }
        Err(StoreError::Open {
            location: self.location.clone(),
            source: "the connection was lost twice in a row".into(),
        })
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let supported = MIGRATIONS.len() as i64;
        let found = self.with_client(|client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&LOCK_CLASS])?;
            tx.batch_execute(SCHEMA_TABLE)?;
            let version: i64 = tx
                .query_opt(
                    "SELECT version FROM backstop_schema WHERE component = $1",
                    &[&COMPONENT],
                )?
                .map(|r| r.get(0))
                .unwrap_or(0);
            if version > supported {
                return Ok(version);
            }
            for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                tx.batch_execute(sql)?;
                tx.execute(
                    "INSERT INTO backstop_schema (component, version) VALUES ($1, $2)
                     ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                    &[&COMPONENT, &(n as i64 + 1)],
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
}

/// `postgres://host:port/db`, without user or password.
fn describe(config: &Config) -> String {
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

fn read_row(r: &postgres::Row) -> Row {
    Row {
        key: r.get(0),
        reason: r.get(1),
        until_ms: r.get(2),
        source: r.get(3),
        last_error: r.get(4),
        failures: r.get(5),
        fingerprint: r.get(6),
        created_ms: r.get(7),
        updated_ms: r.get(8),
    }
}

impl Store for PostgresStore {
    fn update(
        &self,
        key: &Key,
        change: &mut dyn FnMut(Option<Entry>) -> Change,
    ) -> Result<Option<Entry>, StoreError> {
        let location = self.location.clone();
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
        let rows = self.with_client(|client| {
            client.query(
                &format!("SELECT {COLUMNS} FROM backstop_cooldowns WHERE key = ANY($1)"),
                &[&names],
            )
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| read_row(r).into_entry(&self.location))
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
            .filter_map(|r| read_row(r).into_entry(&self.location))
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
        self.location.clone()
    }
}
