//! Where backstop keeps its state: the cooldown ledger and the fan-out
//! queue share one database (each component keeps its own version in
//! `backstop_schema`), and the coordinator's API token sits beside it.

use std::path::{Path, PathBuf};

use backstop_core::{Secret, StateLocation};
use backstop_ledger::Ledger;

use crate::report::{Report, exit};

/// The ledger `spec` names (`--state` or `BACKSTOP_STATE`), else the
/// default file under the user's state directory.
pub fn ledger(spec: Option<&str>) -> Result<Ledger, Report> {
    let store = backstop_ledger::store::open(&resolve(spec)?).map_err(Report::from)?;
    Ok(Ledger::new(store))
}

/// Where the fan-out queue is: the same database as the ledger, for
/// [`backstop_queue::store::open`].
pub fn queue(spec: Option<&str>) -> Result<StateLocation, Report> {
    resolve(spec)
}

/// The location `spec` names, checked before anything is opened: a
/// misspelt URL is a usage error, never a file named after it.
pub fn resolve(spec: Option<&str>) -> Result<StateLocation, Report> {
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) => spec.parse::<StateLocation>().map_err(|e| {
            Report::from_error(exit::USAGE, &e).hint("check --state / BACKSTOP_STATE")
        }),
        None => Ok(StateLocation::Sqlite(default_path()?)),
    }
}

/// The file `backstop serve` keeps its API token in when `BACKSTOP_TOKEN`
/// is not set: beside a SQLite state, readable by the user only. `None`
/// for a database URL.
pub fn token_file(spec: Option<&str>) -> Result<Option<PathBuf>, Report> {
    let StateLocation::Sqlite(path) = resolve(spec)? else {
        return Ok(None);
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(Some(dir.join("serve.token")))
}

/// `BACKSTOP_TOKEN`, when set and not blank.
pub fn env_token() -> Option<Secret> {
    std::env::var("BACKSTOP_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .map(Secret::new)
}

/// The token in `path`, named in messages as `what`: refused when others
/// may read the file or it holds nothing; a warning when the group may.
pub fn read_token_file(path: &Path, what: &str) -> Result<Secret, Report> {
    let named = |e: &std::io::Error| {
        Report::from_error(exit::USAGE, e).detail(format!("{what}: {}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| named(&e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o004 != 0 {
            return Err(Report::new(
                exit::USAGE,
                format!(
                    "the API token in {} can be read by every user of this machine (mode {mode:04o}); it is not used",
                    path.display()
                ),
            )
            .hint(format!("chmod 600 {}", path.display())));
        }
        if mode & 0o040 != 0 {
            tracing::warn!(
                "the API token in {} can be read by its group (mode {mode:04o}); chmod 600 it \
                 unless the group is meant to",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| named(&e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Report::new(
            exit::USAGE,
            format!("{what} {} holds no token", path.display()),
        ));
    }
    Ok(Secret::new(token))
}

/// The coordinator's token: `BACKSTOP_TOKEN`, else the file
/// `BACKSTOP_TOKEN_FILE` names, else the token file beside the state, made
/// with 256 random bits when missing. Returns where it came from.
pub fn serve_token(spec: Option<&str>) -> Result<(Secret, String), Report> {
    if let Some(token) = env_token() {
        return Ok((token, "BACKSTOP_TOKEN".to_owned()));
    }
    if let Some(path) = std::env::var_os("BACKSTOP_TOKEN_FILE").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let token = read_token_file(&path, "BACKSTOP_TOKEN_FILE")?;
        return Ok((token, path.display().to_string()));
    }
    let Some(path) = token_file(spec)? else {
        return Err(Report::new(
            exit::USAGE,
            "set BACKSTOP_TOKEN: with a database URL as state there is no file to keep a token in",
        ));
    };
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return Ok((Secret::new(text.trim()), path.display().to_string()));
    }
    let token = random_hex(32).map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    write_private(&path, &token).map_err(|e| {
        Report::from_error(exit::FAILURE, &e).hint(format!(
            "set BACKSTOP_TOKEN, or make {} writable",
            path.display()
        ))
    })?;
    Ok((Secret::new(token), path.display().to_string()))
}

/// `n` random bytes from the system, as hex: tokens and idempotency keys.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    Ok(hex(&random_bytes(n)?))
}

/// A random UUID (version 4, RFC 9562), as idempotency keys are often
/// written: `8-4-4-4-12` hex digits.
pub fn random_uuid() -> std::io::Result<String> {
    let mut b = random_bytes(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(format!(
        "{}-{}-{}-{}-{}",
        hex(&b[..4]),
        hex(&b[4..6]),
        hex(&b[6..8]),
        hex(&b[8..10]),
        hex(&b[10..])
    ))
}

fn random_bytes(n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Where `push` records unfinished uploads for the next run: beside a
/// SQLite state, else beside the default one (a database URL is no
/// directory).
pub fn uploads_dir(spec: Option<&str>) -> Result<PathBuf, Report> {
    let file = match resolve(spec)? {
        StateLocation::Sqlite(path) => path,
        _ => default_path()?,
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(dir.join("oci-uploads"))
}

/// `$XDG_STATE_HOME/backstop/backstop.db`, else
/// `~/.local/state/backstop/backstop.db`.
fn default_path() -> Result<PathBuf, Report> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    let base = var("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            Report::new(
                exit::USAGE,
                "there is no home directory to keep backstop's state in",
            )
            .hint("set --state or BACKSTOP_STATE to a file or a postgres:// URL")
        })?;
    Ok(base.join("backstop").join("backstop.db"))
}
