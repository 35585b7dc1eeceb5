//! Where backstop keeps its state: the cooldown ledger.

use std::path::PathBuf;

use backstop_ledger::Ledger;

use crate::report::{Report, exit};

/// The ledger `spec` names (`--state` or `BACKSTOP_STATE`), else the
/// default file under the user's state directory.
pub fn ledger(spec: Option<&str>) -> Result<Ledger, Report> {
    let spec = match spec.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) => spec.to_owned(),
        None => default_path()?.display().to_string(),
    };
    let store = backstop_ledger::store::open(&spec).map_err(Report::from)?;
    Ok(Ledger::new(store))
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
                "there is no home directory to keep the ledger in",
            )
            .hint("set --state or BACKSTOP_STATE to a file or a postgres:// URL")
        })?;
    Ok(base.join("backstop").join("backstop.db"))
}
