//! `backstop hub`: the Hugging Face Hub.

use std::io::{IsTerminal, Write};

use backstop_core::Ending;
use backstop_http::Client;
use backstop_hub::{Hub, Model, ModelQuery, Sort};

use crate::cli::{SearchArgs, SortArg};
use crate::report::{Report, exit};

pub async fn search(args: SearchArgs) -> Result<(), Report> {
    let hub = Hub::from_env(args.retry.client()?)?;
    list(&hub, &args).await
}

/// Runs a search against `hub` and prints it; shared with the demo.
pub async fn list(hub: &Hub, args: &SearchArgs) -> Result<(), Report> {
    let query = ModelQuery {
        search: args.search.clone(),
        author: args.author.clone(),
        sort: args.sort.map(|s| match s {
            SortArg::Trending => Sort::Trending,
            SortArg::Downloads => Sort::Downloads,
            SortArg::Likes => Sort::Likes,
            SortArg::Created => Sort::Created,
        }),
        limit: args.limit as usize,
    };
    let models = match hub.search_models(&query).await {
        Ok(models) => models,
        Err(backstop_hub::Error::Http(e))
            if args.skip_on_rate_limit
                && matches!(e.ending(), Some(Ending::RateLimited { .. })) =>
        {
            eprintln!("backstop: skipped: {e}");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        models.iter().try_for_each(|m| {
            let line = serde_json::to_string(m).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")
        })
    } else {
        write!(out, "{}", table(&models, std::io::stdout().is_terminal()))
    };
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Report::from_error(exit::FAILURE, &e))
        }
        _ => Ok(()),
    }
}

/// A client for the demo's local Hub; see `demo.rs`.
pub fn hub_at(client: Client, endpoint: &str) -> Result<Hub, Report> {
    Ok(Hub::new(client, endpoint, None)?)
}

/// An aligned table. Text from the Hub is cleaned first: it must not be
/// able to move the cursor or reorder a line on the user's terminal.
fn table(models: &[Model], terminal: bool) -> String {
    let header = ["MODEL", "DOWNLOADS", "LIKES", "TASK", "CREATED"];
    let rows: Vec<[String; 5]> = models
        .iter()
        .map(|m| {
            [
                clean(&m.id),
                m.downloads.map(grouped).unwrap_or_else(|| "-".into()),
                m.likes.map(grouped).unwrap_or_else(|| "-".into()),
                clean(m.pipeline_tag.as_deref().unwrap_or("-")),
                clean(
                    m.created_at
                        .as_deref()
                        .map(|c| c.get(..10).unwrap_or(c))
                        .unwrap_or("-"),
                ),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String; 5], bold: bool| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            let pad = width - cell.chars().count();
            if i == 1 || i == 2 {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                if i + 1 < cells.len() {
                    text.push_str(&" ".repeat(pad));
                }
            }
            if i + 1 < cells.len() {
                text.push_str("  ");
            }
        }
        if bold {
            out.push_str(&format!("\x1b[1m{text}\x1b[0m\n"));
        } else {
            out.push_str(text.trim_end());
            out.push('\n');
        }
    };
    line(&header.map(String::from), terminal);
    for row in &rows {
        line(row, false);
    }
    out
}

/// Drops control characters and bidirectional overrides.
fn clean(text: &str) -> String {
    text.chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .take(120)
        .collect()
}

fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(id: &str, downloads: Option<u64>) -> Model {
        serde_json::from_value(serde_json::json!({
            "id": id, "downloads": downloads, "likes": 3,
            "pipeline_tag": "text-generation", "createdAt": "2026-04-28T09:12:44.000Z"
        }))
        .unwrap()
    }

    #[test]
    fn tables_align_and_stay_clean() {
        let models = [
            model("Qwen/Qwen3-8B-GGUF", Some(152_311)),
            model("evil/\x1b[2Jx\u{202e}y", None),
        ];
        assert_eq!(
            table(&models, false),
            "MODEL               DOWNLOADS  LIKES  TASK             CREATED\n\
             Qwen/Qwen3-8B-GGUF    152,311      3  text-generation  2026-04-28\n\
             evil/[2Jxy                  -      3  text-generation  2026-04-28\n"
        );
    }

    #[test]
    fn thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
