//! `backstop hub`: the Hugging Face Hub.

use std::io::{IsTerminal, Write};

use backstop_core::Ending;
use backstop_http::Client;
use backstop_hub::{Hub, Query, Repo, RepoInfo, RepoKind, Sort};
use indicatif::HumanBytes;

use crate::cli::{HubCommand, RepoArgs, SearchArgs, SortArg};
use crate::report::{Report, exit};

pub async fn run(command: HubCommand) -> Result<(), Report> {
    match command {
        HubCommand::Search(args) => search(args).await,
        HubCommand::Info(args) => info(args).await,
        HubCommand::Files(args) => files(args).await,
    }
}

async fn search(args: SearchArgs) -> Result<(), Report> {
    let hub = Hub::from_env(args.retry.client()?)?;
    list(&hub, &args).await
}

/// Runs a search against `hub` and prints it; shared with the demo.
pub async fn list(hub: &Hub, args: &SearchArgs) -> Result<(), Report> {
    let kind = if args.datasets {
        RepoKind::Dataset
    } else {
        RepoKind::Model
    };
    let query = Query {
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
    let repos = match hub.search(kind, &query).await {
        Ok(repos) => repos,
        Err(backstop_hub::Error::Http(e))
            if args.skip_on_rate_limit
                && matches!(e.ending(), Some(Ending::RateLimited { .. })) =>
        {
            eprintln!("backstop: skipped: {}", backstop_core::with_causes(&e));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    print(|out| {
        if args.json {
            json_lines(out, &repos)
        } else {
            write!(
                out,
                "{}",
                table(kind, &repos, std::io::stdout().is_terminal())
            )
        }
    })
}

/// `hub info REPO[@REV]`: what the Hub says of a repository at a revision.
async fn info(args: RepoArgs) -> Result<(), Report> {
    let info = repo_info(&args).await?;
    print(|out| {
        if args.json {
            json_lines(out, std::slice::from_ref(&info))
        } else {
            write!(out, "{}", describe(&args.repo, &info))
        }
    })
}

/// `hub files REPO[@REV]`: a repository's files with their sizes and the
/// sha256 of LFS files.
async fn files(args: RepoArgs) -> Result<(), Report> {
    let info = repo_info(&args).await?;
    print(|out| {
        if args.json {
            let files: Vec<serde_json::Value> = info
                .siblings
                .iter()
                .map(|f| {
                    serde_json::json!({
                        "path": f.rfilename,
                        "size": f.content_size(),
                        "sha256": f.lfs.as_ref().map(|l| &l.sha256),
                        "blob_id": f.blob_id,
                    })
                })
                .collect();
            json_lines(out, &files)
        } else {
            let rows: Vec<Vec<String>> = info
                .siblings
                .iter()
                .map(|f| {
                    vec![
                        clean(&f.rfilename),
                        f.content_size().map(grouped).unwrap_or_else(|| "-".into()),
                        f.lfs
                            .as_ref()
                            .map(|l| clean(&l.sha256))
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let terminal = std::io::stdout().is_terminal();
            let text = crate::table::render_aligned(
                &["PATH", "SIZE", "LFS SHA256"],
                &rows,
                &[1],
                terminal,
            );
            write!(out, "{text}")
        }
    })
}

/// The repository `args` names, at its revision.
async fn repo_info(args: &RepoArgs) -> Result<RepoInfo, Report> {
    let hub = Hub::from_env(args.retry.client()?)?;
    let repo = &args.repo;
    Ok(hub
        .info(repo.kind, &repo.repo, repo.revision.as_deref())
        .await?)
}

/// A client for the demo's local Hub; see `demo.rs`.
pub fn hub_at(client: Client, endpoint: &str) -> Result<Hub, Report> {
    Ok(Hub::new(client, endpoint, None)?)
}

/// Writes to stdout with `write`; a reader that went away (`| head`) is
/// not an error.
fn print(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), Report> {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Report::from_error(exit::FAILURE, &e))
        }
        _ => Ok(()),
    }
}

/// One JSON object per line.
fn json_lines(out: &mut dyn Write, values: &[impl serde::Serialize]) -> std::io::Result<()> {
    values.iter().try_for_each(|v| {
        let line = serde_json::to_string(v).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")
    })
}

/// `hub info` as aligned `key  value` lines.
fn describe(asked: &backstop_hub::RepoRef, info: &RepoInfo) -> String {
    let total: u64 = info.siblings.iter().filter_map(|f| f.content_size()).sum();
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "yes".to_owned(),
        Some(false) => "no".to_owned(),
        None => "-".to_owned(),
    };
    let gated = match &info.gated {
        Some(serde_json::Value::Bool(b)) => yes_no(Some(*b)),
        Some(serde_json::Value::String(mode)) => format!("yes ({})", clean(mode)),
        _ => "-".to_owned(),
    };
    let count = |n: Option<u64>| n.map(grouped).unwrap_or_else(|| "-".into());
    let id = match info.id.as_str() {
        "" => asked.repo.clone(),
        id => clean(id),
    };
    let lines = [
        ("id", format!("{}{id}", asked.kind.url_prefix())),
        (
            "revision",
            clean(asked.revision.as_deref().unwrap_or("(default branch)")),
        ),
        ("sha", clean(info.sha.as_deref().unwrap_or("-"))),
        (
            "last modified",
            clean(info.last_modified.as_deref().unwrap_or("-")),
        ),
        ("private", yes_no(info.private)),
        ("gated", gated),
        ("downloads", count(info.downloads)),
        ("likes", count(info.likes)),
        ("files", grouped(info.siblings.len() as u64)),
        (
            "total size",
            format!("{} ({} bytes)", HumanBytes(total), grouped(total)),
        ),
    ];
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(&format!("{key:<15}{value}\n"));
    }
    out
}

/// The search results as an aligned table.
fn table(kind: RepoKind, repos: &[Repo], terminal: bool) -> String {
    let rows: Vec<Vec<String>> = repos
        .iter()
        .map(|m| {
            let created = m
                .created_at
                .as_deref()
                .map(|c| c.get(..10).unwrap_or(c))
                .unwrap_or("-");
            let mut row = vec![
                clean(&m.id),
                m.downloads.map(grouped).unwrap_or_else(|| "-".into()),
                m.likes.map(grouped).unwrap_or_else(|| "-".into()),
            ];
            if kind == RepoKind::Model {
                row.push(clean(m.pipeline_tag.as_deref().unwrap_or("-")));
            }
            row.push(clean(created));
            row
        })
        .collect();
    let header: &[&str] = match kind {
        RepoKind::Model => &["MODEL", "DOWNLOADS", "LIKES", "TASK", "CREATED"],
        _ => &["DATASET", "DOWNLOADS", "LIKES", "CREATED"],
    };
    crate::table::render_aligned(header, &rows, &[1, 2], terminal)
}

/// Drops control characters and bidirectional overrides: text from the
/// Hub must not be able to move the cursor or reorder a line on the
/// user's terminal.
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

    fn model(id: &str, downloads: Option<u64>) -> Repo {
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
            table(RepoKind::Model, &models, false),
            "MODEL               DOWNLOADS  LIKES  TASK             CREATED\n\
             Qwen/Qwen3-8B-GGUF    152,311      3  text-generation  2026-04-28\n\
             evil/[2Jxy                  -      3  text-generation  2026-04-28\n"
        );
        assert_eq!(
            table(RepoKind::Dataset, &models[..1], false),
            "DATASET             DOWNLOADS  LIKES  CREATED\n\
             Qwen/Qwen3-8B-GGUF    152,311      3  2026-04-28\n"
        );
    }

    #[test]
    fn info_is_described() {
        let info: RepoInfo = serde_json::from_value(serde_json::json!({
            "id": "org/m", "sha": "c0ffee", "lastModified": "2026-05-02T11:00:00.000Z",
            "private": false, "gated": "manual", "downloads": 1234, "likes": 5,
            "siblings": [
                {"rfilename": "a.gguf", "size": 135, "lfs": {"sha256": "ab", "size": 2048}},
                {"rfilename": "README.md", "size": 10}
            ]
        }))
        .unwrap();
        let asked: backstop_hub::RepoRef = "org/m@v1".parse().unwrap();
        assert_eq!(
            describe(&asked, &info),
            "id             org/m\n\
             revision       v1\n\
             sha            c0ffee\n\
             last modified  2026-05-02T11:00:00.000Z\n\
             private        no\n\
             gated          yes (manual)\n\
             downloads      1,234\n\
             likes          5\n\
             files          2\n\
             total size     2.01 KiB (2,058 bytes)\n"
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
