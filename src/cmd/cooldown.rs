//! `backstop cooldown`: inspect and change the ledger by hand.

use std::io::{IsTerminal, Write};
use std::time::SystemTime;

use backstop_core::HumanDuration;
use backstop_core::time::format_rfc3339;
use backstop_ledger::{Entry, Reason, Set, State, remaining};

use crate::cli::CooldownCommand;
use crate::report::{Report, exit};

pub fn run(command: CooldownCommand, state: Option<&str>) -> Result<(), Report> {
    match command {
        CooldownCommand::List { all, json } => list(state, all, json),
        CooldownCommand::Set {
            key,
            reason,
            duration,
            until,
            replace,
        } => {
            // Check everything before opening the ledger: bad input changes
            // nothing.
            let now = SystemTime::now();
            let until = match (duration, until) {
                (Some(d), _) => Some(
                    backstop_ledger::deadline(backstop_core::time::later(now, d), now)
                        .map_err(|e| usage(&format!("--for {}", HumanDuration(d)), &e))?,
                ),
                (None, Some(t)) => {
                    Some(backstop_ledger::deadline(t, now).map_err(|e| usage("--until", &e))?)
                }
                (None, None) => None,
            };
            let ledger = crate::state::ledger(state)?;
            let reason = Reason::from(reason);
            let set = match until {
                Some(until) => ledger.set(&key, reason, until, replace)?,
                None => ledger.set_default(&key, reason, replace)?,
            };
            let now = SystemTime::now();
            match set {
                Set::Written(e) => println!(
                    "{} cooling down ({}) until {} (in {})",
                    e.key,
                    e.reason,
                    format_rfc3339(e.until),
                    HumanDuration(remaining(e.until, now))
                ),
                Set::KeptLonger(e) => println!(
                    "{} is already cooling down ({}) until {}, longer; kept it (--replace to shorten)",
                    e.key,
                    e.reason,
                    format_rfc3339(e.until)
                ),
            }
            Ok(())
        }
        CooldownCommand::Clear { key, all } => {
            let ledger = crate::state::ledger(state)?;
            if all {
                let n = ledger.clear_all()?;
                println!("cleared {n} entr{}", if n == 1 { "y" } else { "ies" });
            } else if let Some(key) = key {
                if ledger.clear(&key)? {
                    println!("cleared {key}");
                } else {
                    println!("{key} was not cooling down");
                }
            }
            Ok(())
        }
    }
}

/// `flag` refused for `why`: a usage error.
fn usage(flag: &str, why: &backstop_ledger::Error) -> Report {
    Report::new(exit::USAGE, format!("{flag}: {why}"))
}

fn list(state: Option<&str>, all: bool, json: bool) -> Result<(), Report> {
    let ledger = crate::state::ledger(state)?;
    let now = SystemTime::now();
    let entries: Vec<(Entry, State)> = ledger
        .list()?
        .into_iter()
        .filter(|(_, s)| all || *s == State::Cooling)
        .collect();
    let mut out = std::io::stdout().lock();
    let written = if json {
        entries
            .iter()
            .try_for_each(|(e, s)| writeln!(out, "{}", json_line(e, *s, now)))
    } else {
        write!(
            out,
            "{}",
            table(&entries, now, std::io::stdout().is_terminal())
        )
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Report::from_error(exit::FAILURE, &e))
        }
        _ => Ok(()),
    }
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Cooling => "cooling",
        State::Expired => "over",
        State::CredentialChanged => "credential changed",
    }
}

fn json_line(e: &Entry, s: State, now: SystemTime) -> serde_json::Value {
    serde_json::json!({
        "key": e.key.as_str(),
        "state": state_name(s).replace(' ', "_"),
        "reason": e.reason.as_str(),
        "until": format_rfc3339(e.until),
        "remaining_secs": remaining(e.until, now).as_secs(),
        "source": e.source.as_str(),
        "failures": e.failures,
        "last_error": e.last_error,
        "credential_fingerprint": e.fingerprint,
        "created": format_rfc3339(e.created),
        "updated": format_rfc3339(e.updated),
    })
}

fn table(entries: &[(Entry, State)], now: SystemTime, terminal: bool) -> String {
    if entries.is_empty() {
        return "nothing is cooling down\n".to_owned();
    }
    let header = [
        "KEY",
        "REASON",
        "UNTIL",
        "LEFT",
        "SOURCE",
        "FAILURES",
        "STATE",
        "LAST ERROR",
    ];
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|(e, s)| {
            vec![
                e.key.to_string(),
                e.reason.to_string(),
                format_rfc3339(e.until),
                if *s == State::Cooling {
                    HumanDuration(remaining(e.until, now)).to_string()
                } else {
                    "-".to_owned()
                },
                e.source.to_string(),
                e.failures.to_string(),
                state_name(*s).to_owned(),
                e.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    crate::table::render(&header, &rows, terminal)
}
