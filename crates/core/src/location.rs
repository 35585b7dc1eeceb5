//! Where backstop keeps its state (`--state`, `BACKSTOP_STATE`): a SQLite
//! file or a PostgreSQL URL. Every store parses the location here, once, so
//! that a misspelt URL is refused the same way everywhere instead of
//! becoming a local file named after it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The forms a state location may take, for messages.
pub const KNOWN_FORMS: &str =
    "a path, sqlite:PATH, file:PATH, or a postgres:// or postgresql:// URL";

/// A parsed state location.
///
/// - `postgres://…` and `postgresql://…` (scheme in any case): PostgreSQL.
/// - `sqlite:PATH`, `file:PATH` (also `file:///abs/path`) and a plain path:
///   a SQLite file.
/// - Anything else written `scheme://…` (`postgress://`, `mysql://`,
///   `http://`) is refused: it is a typo or a database backstop does not
///   speak, never a file name.
///
/// ```
/// use std::path::PathBuf;
/// use backstop_core::StateLocation;
///
/// let pg: StateLocation = "postgres://ops@db:5432/backstop".parse().unwrap();
/// assert_eq!(pg, StateLocation::Postgres("postgres://ops@db:5432/backstop".into()));
/// let file: StateLocation = "sqlite:/var/lib/backstop.db".parse().unwrap();
/// assert_eq!(file, StateLocation::Sqlite(PathBuf::from("/var/lib/backstop.db")));
/// assert!("mysql://db/backstop".parse::<StateLocation>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateLocation {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (its scheme lowercased).
    Postgres(String),
}

/// A state location that cannot be used. Its message never repeats more
/// of the location than its scheme, which is where a password would not be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocationError {
    /// Empty, or only a scheme with nothing after it.
    Empty,
    /// A `scheme://` that names no store backstop knows.
    UnknownScheme(String),
    /// `postgres:` or `postgresql:` without `//HOST…` after it.
    NotAUrl,
}

impl fmt::Display for LocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationError::Empty => write!(f, "the state location is empty; use {KNOWN_FORMS}"),
            LocationError::UnknownScheme(scheme) => write!(
                f,
                "{scheme}:// is not a state location backstop knows; use {KNOWN_FORMS}"
            ),
            LocationError::NotAUrl => write!(
                f,
                "a PostgreSQL state location is a URL: postgres://USER@HOST:PORT/DATABASE"
            ),
        }
    }
}

impl std::error::Error for LocationError {}

impl FromStr for StateLocation {
    type Err = LocationError;

    fn from_str(spec: &str) -> Result<StateLocation, LocationError> {
        let spec = spec.trim();
        let path = |p: &str| {
            if p.is_empty() {
                Err(LocationError::Empty)
            } else {
                Ok(StateLocation::Sqlite(PathBuf::from(p)))
            }
        };
        let Some((scheme, rest)) = scheme_of(spec) else {
            return path(spec);
        };
        match scheme.to_ascii_lowercase().as_str() {
            s @ ("postgres" | "postgresql") => match rest.strip_prefix("//") {
                Some(after) if !after.is_empty() => {
                    Ok(StateLocation::Postgres(format!("{s}:{rest}")))
                }
                _ => Err(LocationError::NotAUrl),
            },
            "sqlite" => path(rest),
            // file:///abs, file:/abs, file:relative; a host other than
            // empty or localhost is not a local file.
            "file" => match rest.strip_prefix("//") {
                None => path(rest),
                Some(after) => match after.find('/') {
                    Some(0) => path(after),
                    Some(i) if &after[..i] == "localhost" => path(&after[i..]),
                    _ => Err(LocationError::UnknownScheme(scheme.to_owned())),
                },
            },
            _ if rest.starts_with("//") => Err(LocationError::UnknownScheme(
                scheme.chars().take(32).collect(),
            )),
            // "a:b.db" is a file name with a colon, not a URL.
            _ => path(spec),
        }
    }
}

/// `scheme` and what follows its colon, when `spec` starts with an RFC 3986
/// scheme (a letter, then letters, digits, `+`, `-`, `.`).
fn scheme_of(spec: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = spec.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some((scheme, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(p: &str) -> Result<StateLocation, LocationError> {
        Ok(StateLocation::Sqlite(PathBuf::from(p)))
    }

    #[test]
    fn every_form() {
        let pg = |u: &str| Ok(StateLocation::Postgres(u.to_owned()));
        let unknown = |s: &str| Err(LocationError::UnknownScheme(s.to_owned()));
        let cases: &[(&str, Result<StateLocation, LocationError>)] = &[
            ("postgres://u@h:5432/db", pg("postgres://u@h:5432/db")),
            ("postgresql://h/db", pg("postgresql://h/db")),
            ("POSTGRES://h/db", pg("postgres://h/db")),
            ("  postgres://h/db\n", pg("postgres://h/db")),
            ("/var/lib/backstop.db", sqlite("/var/lib/backstop.db")),
            ("state.db", sqlite("state.db")),
            ("a:b.db", sqlite("a:b.db")),
            ("./x://y", sqlite("./x://y")),
            ("sqlite:/tmp/s.db", sqlite("/tmp/s.db")),
            ("sqlite:s.db", sqlite("s.db")),
            ("file:s.db", sqlite("s.db")),
            ("file:/tmp/s.db", sqlite("/tmp/s.db")),
            ("file:///tmp/s.db", sqlite("/tmp/s.db")),
            ("file://localhost/tmp/s.db", sqlite("/tmp/s.db")),
            ("file://server/s.db", unknown("file")),
            ("postgress://u:pw@h/db", unknown("postgress")),
            ("mysql://h/db", unknown("mysql")),
            ("http://h/db", unknown("http")),
            ("sqlite://h/db", sqlite("//h/db")),
            ("", Err(LocationError::Empty)),
            ("sqlite:", Err(LocationError::Empty)),
            ("postgres://", Err(LocationError::NotAUrl)),
            ("postgres:h/db", Err(LocationError::NotAUrl)),
        ];
        for (spec, want) in cases {
            assert_eq!(&spec.parse::<StateLocation>(), want, "{spec:?}");
        }
    }

    #[test]
    fn messages_name_the_scheme_and_the_known_forms_never_a_password() {
        let e = "postgress://ops:hunter2@db/x"
            .parse::<StateLocation>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "postgress:// is not a state location backstop knows; use a path, sqlite:PATH, \
             file:PATH, or a postgres:// or postgresql:// URL"
        );
    }
}
