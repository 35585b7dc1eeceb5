//! `backstop get`: one GET with the engine's retries, through the same
//! download as `pull`: a body cut short continues by Range from what has
//! arrived, and the guards are against hangs (connect, response headers,
//! read idle, a minimum-progress window), never against a slow success.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backstop_core::HumanDuration;
use backstop_http::Client;
use backstop_transfer::{Event, Item, Options, Outcome, Plan, Planned, Progress, Pull};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::cli::GetArgs;
use crate::report::{Report, exit};

pub async fn run(args: GetArgs) -> Result<(), Report> {
    let client = args.retry.client()?;
    // The URL and headers are checked here, before anything is written.
    let mut request = client.get(&args.url);
    for (name, value) in &args.headers {
        request = request.header(name, value);
    }
    let url = request.prepare()?.url().clone();
    let item = item(url, &args.headers);
    let download = Download {
        client,
        options: options(&args),
        deadline: args.retry.backoff.deadline,
        partial_kept: args.output.is_some(),
    };
    match &args.output {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return Err(Report::new(
                    exit::FAILURE,
                    format!(
                        "cannot write {}: {} is not a folder",
                        path.display(),
                        dir.display()
                    ),
                )
                .hint("nothing was sent"));
            }
            let written = download.to(item, path).await?;
            tracing::info!("wrote {written} bytes to {}", path.display());
        }
        None => {
            // The whole body first, then stdout: a retry never leaves a
            // partial copy in a pipe.
            let spool = tempfile::tempdir()
                .map_err(|e| Report::from_error(exit::FAILURE, &e).hint("no temporary folder"))?;
            let body = spool.path().join("body");
            download.to(item, &body).await?;
            let mut body =
                std::fs::File::open(&body).map_err(|e| Report::from_error(exit::FAILURE, &e))?;
            copy_to_stdout(&mut body)?;
        }
    }
    Ok(())
}

/// Copies a whole body from its file to stdout.
pub fn copy_to_stdout(body: &mut std::fs::File) -> Result<(), Report> {
    use std::io::Seek;
    let copied = body.rewind().and_then(|()| {
        let mut stdout = std::io::stdout().lock();
        std::io::copy(body, &mut stdout)?;
        stdout.flush()
    });
    match copied {
        Ok(()) => Ok(()),
        // The reader went away (`| head`): not our failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Report::from_error(exit::FAILURE, &e).hint("stdout could not be written")),
    }
}

/// The one file of the download: whatever the URL gives, with the
/// headers asked for.
fn item(url: Url, headers: &[(String, String)]) -> Item {
    let shown = backstop_http::redact_url(&url);
    Item {
        name: shown.clone(),
        url,
        size: None,
        sha256: None,
        token: None,
        headers: headers.to_vec(),
        authorizer: None,
        origin: shown,
        repo: None,
        hub: None,
    }
}

/// A pull's options for one URL: the API preset with the flags, one
/// stream, and what is in place replaced, as `-o` promises.
fn options(args: &GetArgs) -> Options {
    Options {
        jobs: 1,
        streams: 1,
        policy: args.retry.policy(),
        attempt_timeout: args.retry.transfer_attempt_timeout(),
        min_progress: crate::cli::MinProgressArg::window(args.min_progress),
        replace_existing: true,
        ..Options::default()
    }
}

/// One download, stopped cleanly by Ctrl-C, SIGTERM or the deadline.
struct Download {
    client: Client,
    options: Options,
    deadline: Option<std::time::Duration>,
    /// What arrived stays on disk when the download stops (`-o`), rather
    /// than in a temporary folder that goes with it (stdout).
    partial_kept: bool,
}

impl Download {
    /// Downloads `item` to `dest`; returns the bytes written.
    async fn to(self, item: Item, dest: &Path) -> Result<u64, Report> {
        let host = backstop_http::display_host(&item.url);
        let token = CancellationToken::new();
        let deadline_passed = Arc::new(AtomicBool::new(false));
        let watch = {
            let (token, passed) = (token.clone(), Arc::clone(&deadline_passed));
            let deadline = self.deadline;
            tokio::spawn(async move {
                let deadline = async {
                    match deadline {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = crate::interrupted() => {}
                    () = deadline => passed.store(true, Ordering::Release),
                }
                token.cancel();
            })
        };
        let plan = Plan {
            files: vec![Planned::at(item, dest.to_owned())],
        };
        let summary = Pull::new(self.client)
            .options(self.options)
            .progress(Arc::new(Log { host }))
            .cancel_on(token)
            .run(&plan)
            .await;
        watch.abort();
        let Some(file) = summary?.files.into_iter().next() else {
            return Err(Report::new(exit::FAILURE, "nothing was downloaded"));
        };
        match file.outcome {
            Outcome::Downloaded { bytes, .. } | Outcome::AlreadyThere { bytes } => Ok(bytes),
            Outcome::Failed(e) => Err(e.into()),
            Outcome::Interrupted { have } => {
                let report = if deadline_passed.load(Ordering::Acquire) {
                    Report::new(exit::TEMPFAIL, "deadline passed")
                } else {
                    Report::new(exit::INTERRUPTED, "interrupted")
                };
                Err(if have > 0 && self.partial_kept {
                    report.hint(format!(
                        "the {have} bytes that arrived are kept in a .part file beside {}; run the same command again to resume",
                        file.dest.display()
                    ))
                } else {
                    report
                        .hint("nothing was left half-written; run the same command again to retry")
                })
            }
        }
    }
}

/// What a retried download says on stderr, in the words of every retried
/// call: "HOST: REASON; retry N of M in DELAY".
struct Log {
    host: String,
}

impl Progress for Log {
    fn advance(&self, _: usize, _: u64) {}

    fn event(&self, _: usize, event: Event<'_>) {
        let host = &self.host;
        match event {
            Event::Retry {
                attempt,
                max_attempts,
                reason,
                delay,
                ..
            } => tracing::info!(
                host,
                attempt,
                reason,
                "{host}: {reason}; retry {attempt} of {} in {}",
                max_attempts.saturating_sub(1),
                HumanDuration(delay),
            ),
            Event::Resume { at, reason, delay } => tracing::info!(
                host,
                at,
                reason,
                "{host}: {reason}; resuming from byte {at} in {}",
                HumanDuration(delay),
            ),
            Event::Restart { reason } => tracing::info!(host, "{host}: {reason}"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use clap::Parser;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;

    use super::*;
    use crate::cli::{Cli, Command};

    const PIECE: usize = 64 << 10;
    const PIECES: usize = 40;
    const EVERY: Duration = Duration::from_secs(4);

    /// A server on the test's own (paused) clock that sends every body
    /// in `PIECES` pieces, one every `EVERY`, ignoring Range: a download
    /// cut and resumed would get the whole body again.
    async fn dripping() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/big.bin", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counted.fetch_add(1, Ordering::SeqCst);
                    let headers = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        PIECE * PIECES
                    );
                    if conn.write_all(headers.as_bytes()).await.is_err() {
                        return;
                    }
                    for i in 0..PIECES {
                        tokio::time::sleep(EVERY).await;
                        if conn.write_all(&[i as u8; PIECE]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, requests)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_body_that_keeps_flowing_is_never_cut() {
        let (url, requests) = dripping().await;
        let Command::Get(args) = Cli::parse_from(["backstop", "get", &url]).command else {
            unreachable!()
        };
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("big.bin");
        let download = Download {
            client: args.retry.client().unwrap(),
            options: options(&args),
            deadline: None,
            partial_kept: true,
        };
        let started = Instant::now();
        let written = download
            .to(item(Url::parse(&url).unwrap(), &[]), &dest)
            .await
            .unwrap();
        assert_eq!(written, (PIECE * PIECES) as u64);
        assert_eq!(
            started.elapsed(),
            EVERY * PIECES as u32,
            "2.5 MiB over 160 s, far longer than the 30 s an attempt had"
        );
        assert_eq!(
            requests.load(Ordering::SeqCst),
            1,
            "never cut, never resumed"
        );
        let got = std::fs::read(&dest).unwrap();
        assert!(
            got.chunks(PIECE)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&b| b == i as u8))
        );
    }
}
