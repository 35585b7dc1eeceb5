//! `backstop pick`: the first model that can be used now.

use std::time::SystemTime;

use backstop_core::HumanDuration;
use backstop_core::time::format_rfc3339;
use backstop_ledger::{Entry, Key, remaining};

use crate::cli::PickArgs;
use crate::report::{Report, exit};

pub fn run(args: PickArgs, state: Option<&str>) -> Result<(), Report> {
    let ledger = crate::state::ledger(state)?;
    let pick = ledger.pick(&args.models)?;
    let earliest = pick.earliest();
    if args.json {
        let json = serde_json::json!({
            "available": pick.available.as_ref().map(Key::as_str),
            "earliest": earliest.map(|(model, at)| serde_json::json!({
                "model": model.as_str(),
                "at": format_rfc3339(at),
            })),
        });
        println!("{json}");
    } else if let Some(model) = &pick.available {
        println!("{model}");
    }
    if pick.available.is_some() {
        return Ok(());
    }
    let now = SystemTime::now();
    let mut message = String::from("no model is available");
    if let Some((model, at)) = earliest {
        message.push_str(&format!(
            "; the first to free up is {model}, at {} (in {})",
            format_rfc3339(at),
            HumanDuration(remaining(at, now))
        ));
    }
    let mut report = Report::new(exit::TEMPFAIL, message);
    for (model, entry) in &pick.blocked {
        report = report.detail(blocked_line(model, entry, now));
    }
    Err(report)
}

/// "anthropic/x: rate_limit until 2026-11-22T14:03:00Z (in 4 min), on anthropic/x".
pub fn blocked_line(model: &Key, entry: &Entry, now: SystemTime) -> String {
    let scope = if &entry.key == model {
        String::new()
    } else {
        format!(" (its provider {})", entry.key)
    };
    format!(
        "{model}: {}{scope} until {} (in {})",
        entry.reason,
        format_rfc3339(entry.until),
        HumanDuration(remaining(entry.until, now))
    )
}
