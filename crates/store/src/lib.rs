//! The storage plumbing every backstop store shares (the cooldown ledger,
//! the fan-out queue), so that each component reaches its state the same
//! way, SQLite or PostgreSQL.
//!
//! - [`StateLocation`]: where the state is (`--state`, `BACKSTOP_STATE`),
//!   a path or a URL, unknown schemes refused. It is parsed in
//!   `backstop_core` (no I/O, so the binary and every crate read it the
//!   same way before anything is opened) and re-exported here.
//! - [`StoreError`]: the one error type of every store, naming the
//!   component ("the queue at …") and never a password.
//! - [`sqlite::Database`]: a file, opened with a private directory, WAL,
//!   `synchronous=FULL` and busy retries.
//! - [`postgres::Database`]: a server, reached with timeouts and
//!   keepalives through a few connections that reconnect, with conflicts
//!   retried.
//! - Migrations: each component keeps its version in `backstop_schema`
//!   ([`SCHEMA_TABLE`]), the table every backstop component shares in one
//!   database.
//!
//! Every call blocks the thread it runs on: from async code, call a store
//! where blocking is allowed (`spawn_blocking`).

#![forbid(unsafe_code)]

mod error;
pub mod postgres;
pub mod sqlite;

pub use backstop_core::{KNOWN_FORMS, LocationError, StateLocation};
pub use error::{ColumnError, Place, StoreError, TxError};

/// Creates the table of component versions when missing. The same
/// statement serves SQLite and PostgreSQL.
pub const SCHEMA_TABLE: &str = "CREATE TABLE IF NOT EXISTS backstop_schema (
    component TEXT PRIMARY KEY NOT NULL,
    version BIGINT NOT NULL
)";
