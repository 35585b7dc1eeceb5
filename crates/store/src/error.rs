//! The one error type of every store.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::time::Duration;

/// A store that failed, or refused a request.
///
/// `component` names the store in messages ("the queue at sqlite:…",
/// "the ledger at postgres://db:5432/ops"); `location` never holds a user
/// or a password. `R` is what a store refuses with, before changing
/// anything ([`StoreError::Rejected`]); a store that refuses nothing uses
/// [`Infallible`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError<R = Infallible> {
    /// The request names something that does not exist, or cannot be
    /// done; nothing was changed.
    #[error(transparent)]
    Rejected(#[from] R),
    /// The location cannot be read (a URL of the wrong shape); nothing was
    /// tried.
    #[error("{location} is not a {component} location backstop can read")]
    Location {
        /// "queue", "ledger".
        component: &'static str,
        /// What can be shown of it.
        location: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The store could not be reached (a server down, a network cut).
    /// Trying again later may help.
    #[error("cannot open the {component} at {location}")]
    Open {
        /// "queue", "ledger".
        component: &'static str,
        /// Where.
        location: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The location cannot hold the store: a file that cannot be created
    /// or opened (permission denied, a directory in its path that is a
    /// file). Trying again will not help.
    #[error("cannot use {location} for the {component}")]
    Unusable {
        /// "queue", "ledger".
        component: &'static str,
        /// Where.
        location: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// Other writers held the store for longer than backstop waits.
    #[error("the {component} at {location} stayed locked by other processes for {}", backstop_core::HumanDuration(*waited))]
    Busy {
        /// "queue", "ledger".
        component: &'static str,
        /// Where.
        location: String,
        /// How long backstop waited.
        waited: Duration,
    },
    /// The store holds a schema newer than this backstop knows.
    #[error(
        "the {component} at {location} has schema version {found}, newer than the {supported} this backstop knows; upgrade backstop"
    )]
    TooNew {
        /// "queue", "ledger".
        component: &'static str,
        /// Where.
        location: String,
        /// The version found.
        found: i64,
        /// The newest version known here.
        supported: i64,
    },
    /// A read or a write failed, or the server refused the credentials.
    #[error("the {component} at {location} failed")]
    Failed {
        /// "queue", "ledger".
        component: &'static str,
        /// Where.
        location: String,
        /// Why.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

impl<R> StoreError<R> {
    /// Whether trying again later may succeed (a busy or unreachable
    /// store), as opposed to a broken one or a refused request.
    pub fn is_temporary(&self) -> bool {
        matches!(self, StoreError::Busy { .. } | StoreError::Open { .. })
    }
}

/// Which store, where: what every [`StoreError`] of one store names.
#[derive(Clone, Debug)]
pub struct Place {
    component: &'static str,
    location: String,
}

impl Place {
    /// `component` ("queue", "ledger") at `location`, which must hold no
    /// user or password.
    pub fn new(component: &'static str, location: String) -> Place {
        Place {
            component,
            location,
        }
    }

    /// "queue", "ledger".
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// `sqlite:PATH`, `postgres://host:port/db`.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// [`StoreError::Failed`] here.
    pub fn failed<R>(&self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> StoreError<R> {
        StoreError::Failed {
            component: self.component,
            location: self.location.clone(),
            source: source.into(),
        }
    }

    /// [`StoreError::Open`] here.
    pub fn unreachable<R>(
        &self,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> StoreError<R> {
        StoreError::Open {
            component: self.component,
            location: self.location.clone(),
            source: source.into(),
        }
    }

    /// [`StoreError::Unusable`] here.
    pub fn unusable<R>(&self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> StoreError<R> {
        StoreError::Unusable {
            component: self.component,
            location: self.location.clone(),
            source: source.into(),
        }
    }

    /// [`StoreError::Busy`] here.
    pub fn busy<R>(&self, waited: Duration) -> StoreError<R> {
        StoreError::Busy {
            component: self.component,
            location: self.location.clone(),
            waited,
        }
    }

    /// [`StoreError::TooNew`] here.
    pub fn too_new<R>(&self, found: i64, supported: i64) -> StoreError<R> {
        StoreError::TooNew {
            component: self.component,
            location: self.location.clone(),
            found,
            supported,
        }
    }
}

/// What a store's transaction body fails with: its driver's error (`E`),
/// a column it cannot read, or a refusal (`R`) that rolls the transaction
/// back.
#[derive(Debug)]
pub enum TxError<E, R = Infallible> {
    /// The driver failed.
    Driver(E),
    /// A row holds what the store cannot read (a schema changed by hand).
    Unreadable(ColumnError),
    /// The body refused the request.
    Rejected(R),
}

/// A column that holds what the store cannot read: missing, or of another
/// type than the store's schema gives it (a table changed by hand, or by
/// another version). Told as [`StoreError::Failed`], never a panic.
#[derive(Debug, thiserror::Error)]
#[error("column {column} cannot be read")]
pub struct ColumnError {
    /// The column's name (its position when it has none).
    pub column: String,
    /// Why.
    #[source]
    pub source: Box<dyn StdError + Send + Sync>,
}

impl<E, R> From<ColumnError> for TxError<E, R> {
    fn from(e: ColumnError) -> Self {
        TxError::Unreadable(e)
    }
}

impl<E, R> TxError<E, R> {
    /// The driver's error, if that is what it is.
    pub fn driver(&self) -> Option<&E> {
        match self {
            TxError::Driver(e) => Some(e),
            TxError::Unreadable(_) | TxError::Rejected(_) => None,
        }
    }
}

impl<R> From<rusqlite::Error> for TxError<rusqlite::Error, R> {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Driver(e)
    }
}

impl<R> From<postgres::Error> for TxError<postgres::Error, R> {
    fn from(e: postgres::Error) -> Self {
        TxError::Driver(e)
    }
}
