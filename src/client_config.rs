//! Where `ops` and `nodes` find the coordinator: its URL, the API token
//! and the authorities to trust. Each comes from its flag, else the
//! environment, else the client file, so that an operator puts neither a
//! token nor a URL in the shell's history:
//!
//! ```toml
//! # $XDG_CONFIG_HOME/backstop/client.toml (else ~/.config/backstop/client.toml)
//! server = "https://coord-1:7878"
//! token_file = "~/.config/backstop/api.token"   # relative: to this file's directory
//! ca_file = "/etc/backstop/ca.pem"
//! ```
//!
//! The token: `--token-file`, else `BACKSTOP_TOKEN`, else
//! `BACKSTOP_TOKEN_FILE`, else the file's `token_file`, else the token
//! `backstop serve` keeps beside the state (a coordinator on this
//! machine). A token file others may read is refused, as ssh refuses a
//! private key others may read; one the group may read is used, with a
//! warning ([`crate::state::read_token_file`]).

use std::path::{Path, PathBuf};

use backstop_core::Secret;
use serde::Deserialize;

use crate::cli::ServerArgs;
use crate::report::{Report, exit};

/// The coordinator's API when nothing names another.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// The client file, as read.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// How to reach the coordinator, every setting resolved.
pub struct Access {
    /// Its API's URL.
    pub server: String,
    /// The API token.
    pub token: Secret,
    /// Authorities to trust besides the system's.
    pub ca_file: Option<PathBuf>,
}

/// The client file's path: `$XDG_CONFIG_HOME/backstop/client.toml`, else
/// `~/.config/backstop/client.toml`; `None` without either variable.
pub fn client_file() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|base| base.join("backstop").join("client.toml"))
}

/// Reads the client file at `path`: nothing when there is none, an error
/// (exit 2) naming it when it cannot be read or is not valid. Relative
/// paths in it are taken from its directory, and `~/` is the home
/// directory.
fn read_client_file(path: &Path) -> Result<ClientFile, Report> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClientFile::default()),
        Err(e) => {
            return Err(Report::from_error(exit::USAGE, &e)
                .detail(format!("reading the client file {}", path.display())));
        }
    };
    let mut file: ClientFile = toml::from_str(&text).map_err(|e| {
        Report::new(
            exit::USAGE,
            format!(
                "{} is not a valid client file: {}",
                path.display(),
                e.to_string().trim()
            ),
        )
        .hint("it may set server, token_file and ca_file")
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    file.token_file = file.token_file.map(|p| beside(dir, &p));
    file.ca_file = file.ca_file.map(|p| beside(dir, &p));
    Ok(file)
}

/// `path` as the client file in `dir` means it.
fn beside(dir: &Path, path: &Path) -> PathBuf {
    if let Ok(rest) = path.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty())
    {
        return PathBuf::from(home).join(rest);
    }
    dir.join(path)
}

/// Resolves every setting of `args`, as the module documentation says.
pub fn resolve(args: &ServerArgs, state: Option<&str>) -> Result<Access, Report> {
    let path = client_file();
    let file = match &path {
        Some(path) => read_client_file(path)?,
        None => ClientFile::default(),
    };
    let in_file = |key: &str| match &path {
        Some(path) => format!("{key} in {}", path.display()),
        None => key.to_owned(),
    };
    let server = args
        .server
        .clone()
        .or(file.server)
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    let token = if let Some(flag) = &args.token_file {
        crate::state::read_token_file(flag, "--token-file")?
    } else if let Some(token) = crate::state::env_token() {
        token
    } else if let Some(env) = std::env::var_os("BACKSTOP_TOKEN_FILE").filter(|v| !v.is_empty()) {
        crate::state::read_token_file(Path::new(&env), "BACKSTOP_TOKEN_FILE")?
    } else if let Some(from_file) = &file.token_file {
        crate::state::read_token_file(from_file, &in_file("token_file"))?
    } else {
        serve_token(state)?
    };
    Ok(Access {
        server,
        token,
        ca_file: args.ca_file.clone().or(file.ca_file),
    })
}

/// The token `backstop serve` keeps beside the state, for a coordinator on
/// this machine.
fn serve_token(state: Option<&str>) -> Result<Secret, Report> {
    let missing = || {
        Report::new(exit::USAGE, "no API token: none is set, and there is no coordinator's token here").hint(
            "set --token-file, BACKSTOP_TOKEN_FILE or BACKSTOP_TOKEN (or token_file in the client file), or run this where `backstop serve` keeps its state",
        )
    };
    let Some(path) = crate::state::token_file(state)? else {
        return Err(missing());
    };
    if !path.exists() {
        return Err(missing());
    }
    crate::state::read_token_file(&path, "the token `backstop serve` keeps")
}
