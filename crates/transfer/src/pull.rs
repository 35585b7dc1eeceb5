//! Many files at once: a bounded number in flight, each retried on its
//! own, and the ones a server would certainly refuse stopped early when it
//! refuses the credentials (see [`crate::refusal`]).

use std::path::PathBuf;
use std::sync::Arc;

use backstop_core::Ending;
use backstop_http::{Client, Method, display_host};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::download::{self, Job};
use crate::refusal::{Refusals, Scope};
use crate::{Error, Event, FileError, Options, Plan, Planned, Progress, Sha256};

/// How one file ended.
#[derive(Debug)]
pub enum Outcome {
    /// Downloaded, checked and renamed into place.
    Downloaded {
        /// Its size.
        bytes: u64,
        /// Its sha256, when one was expected (and so checked).
        sha256: Option<Sha256>,
        /// Bytes that were already in the partial file from an earlier run.
        resumed_from: u64,
    },
    /// Already in place with the right size (and digest, when known).
    AlreadyThere {
        /// Its size.
        bytes: u64,
    },
    /// Stopped by the caller; the partial file and its record are kept.
    Interrupted {
        /// Bytes safely in the partial file.
        have: u64,
    },
    /// Did not arrive.
    Failed(FileError),
}

impl Outcome {
    /// Whether the file is in place.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            Outcome::Downloaded { .. } | Outcome::AlreadyThere { .. }
        )
    }
}

/// One file's line of the summary.
#[derive(Debug)]
pub struct FileReport {
    /// The name under the destination.
    pub name: String,
    /// Where it is, or would be.
    pub dest: PathBuf,
    /// Bytes received from the network for it, including any thrown away
    /// (a restart, a corrupted copy).
    pub fetched: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Every file's outcome, in plan order.
#[derive(Debug, Default)]
pub struct Summary {
    /// The files.
    pub files: Vec<FileReport>,
}

impl Summary {
    /// Every file is in place.
    pub fn succeeded(&self) -> bool {
        self.files.iter().all(|f| f.outcome.is_success())
    }

    /// Some file was stopped by the caller.
    pub fn interrupted(&self) -> bool {
        self.files
            .iter()
            .any(|f| matches!(f.outcome, Outcome::Interrupted { .. }))
    }

    /// Every failure may go away if the same pull runs again later (exit
    /// code 75 rather than 1).
    pub fn failures_temporary(&self) -> bool {
        self.files.iter().all(|f| match &f.outcome {
            Outcome::Failed(e) => e.is_temporary(),
            _ => true,
        })
    }

    /// Bytes received from the network, over all files.
    pub fn fetched(&self) -> u64 {
        self.files.iter().map(|f| f.fetched).sum()
    }
}

/// A pull: the files of a [`Plan`], downloaded with a client.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::path::Path;
/// use backstop_transfer::{Options, Plan, Pull, Source, resolve};
///
/// let client = backstop_http::Client::new()?;
/// let hub = backstop_hub::Hub::from_env(client.clone())?;
/// let sources: Vec<Source> = vec!["hf://Qwen/Qwen3-0.6B-GGUF/*Q8_0*".parse()?];
/// let plan = Plan::new(Path::new("models"), resolve(&sources, &hub, &[], &[]).await?)?;
/// let summary = Pull::new(client).options(Options { jobs: 4, ..Options::default() }).run(&plan).await?;
/// assert!(summary.succeeded());
/// # Ok(()) }
/// ```
pub struct Pull {
    client: Client,
    options: Options,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
}

impl Pull {
    /// A pull with the default [`Options`], no progress display and no
    /// cancellation.
    pub fn new(client: Client) -> Self {
        Pull {
            client,
            options: Options::default(),
            progress: Arc::new(()),
            cancel: CancellationToken::new(),
        }
    }

    /// Sets the options.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// Reports progress to `progress`.
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Stops when `token` is cancelled: every file ends at once as
    /// [`Outcome::Interrupted`], with its partial file synced and recorded
    /// so that the same pull resumes it.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = token;
        self
    }

    /// Downloads every file of `plan`, at most `jobs` at once. Each file
    /// retries on its own; a failure never cancels another file, except
    /// that refused credentials (401, 403) stop, as [`FileError::Stopped`],
    /// the files not yet finished that would certainly be refused too: at
    /// once the other files of the same `hf://` repository, and the other
    /// URLs of an origin once a second one of them has been refused with
    /// no success in between.
    ///
    /// A pull into the Hugging Face cache then records each revision's
    /// ref (`refs/main`) once every one of its files is in place.
    ///
    /// Fails only before anything is sent, when a request cannot be built
    /// (a malformed header).
    pub async fn run(&self, plan: &Plan) -> Result<Summary, Error> {
        for planned in &plan.files {
            download::request(&self.client, Method::GET, &planned.item)
                .prepare()
                .map_err(Error::Request)?;
        }
        let permits = Arc::new(Semaphore::new(self.options.jobs.max(1)));
        let refusals = Arc::new(Refusals::new(self.cancel.clone()));
        let mut tasks = JoinSet::new();
        for (id, planned) in plan.files.iter().enumerate() {
            let scope = Scope::of(&planned.item);
            let task = Task {
                planned: planned.clone(),
                id,
                host: display_host(&planned.item.url),
                token: refusals.token(&scope),
                scope,
                client: self.client.clone(),
                options: self.options.clone(),
                progress: Arc::clone(&self.progress),
                cancel: self.cancel.clone(),
                permits: Arc::clone(&permits),
                refusals: Arc::clone(&refusals),
            };
            tasks.spawn(task.run());
        }
        let mut files: Vec<Option<FileReport>> = (0..plan.files.len()).map(|_| None).collect();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((id, report)) => files[id] = Some(report),
                // A file's task cannot panic by design; should one, its
                // file is reported as not finished rather than lost.
                Err(e) => tracing::error!("a download task failed: {e}"),
            }
        }
        let files = files
            .into_iter()
            .zip(&plan.files)
            .map(|(report, planned)| {
                report.unwrap_or_else(|| FileReport {
                    name: planned.item.name.clone(),
                    dest: planned.dest.clone(),
                    fetched: 0,
                    outcome: Outcome::Interrupted { have: 0 },
                })
            })
            .collect::<Vec<_>>();
        crate::cache::record_refs(&plan.files, &files);
        Ok(Summary { files })
    }
}

/// One file's task.
struct Task {
    planned: Planned,
    id: usize,
    host: String,
    /// The files a refusal of this one's credentials speaks for.
    scope: Scope,
    /// Cancelled on the caller's cancellation, or when the server refused
    /// the credentials for other files of the scope.
    token: CancellationToken,
    client: Client,
    options: Options,
    progress: Arc<dyn Progress>,
    cancel: CancellationToken,
    permits: Arc<Semaphore>,
    refusals: Arc<Refusals>,
}

impl Task {
    async fn run(self) -> (usize, FileReport) {
        let not_started = |outcome: Outcome| FileReport {
            name: self.planned.item.name.clone(),
            dest: self.planned.dest.clone(),
            fetched: 0,
            outcome,
        };
        let permit = tokio::select! {
            biased;
            () = self.token.cancelled() => None,
            permit = self.permits.acquire() => permit.ok(),
        };
        if permit.is_none() || self.token.is_cancelled() {
            let outcome = self.stopped(Outcome::Interrupted {
                have: std::fs::metadata(self.planned.part()).map_or(0, |m| m.len()),
            });
            let report = not_started(outcome);
            self.progress.event(self.id, Event::Finish(&report));
            return (self.id, report);
        }
        let job = Job {
            planned: &self.planned,
            id: self.id,
            client: &self.client,
            options: &self.options,
            progress: self.progress.as_ref(),
            cancel: &self.token,
        };
        let mut report = download::download(&job).await;
        drop(permit);
        match &report.outcome {
            Outcome::Failed(e)
                if e.ending() == Some(Ending::Auth) && self.refusals.refused(&self.scope) =>
            {
                tracing::debug!(
                    "{} refused the credentials; stopping the other files of {:?}",
                    self.host,
                    self.scope
                );
            }
            outcome if outcome.is_success() => self.refusals.succeeded(&self.scope),
            _ => {}
        }
        report.outcome = self.stopped(report.outcome);
        self.progress.event(self.id, Event::Finish(&report));
        (self.id, report)
    }

    /// An interruption the caller did not ask for is the server's refusal.
    fn stopped(&self, outcome: Outcome) -> Outcome {
        match outcome {
            Outcome::Interrupted { .. } if !self.cancel.is_cancelled() => {
                Outcome::Failed(FileError::Stopped {
                    host: self.host.clone(),
                    repo: self.scope.repo().map(str::to_owned),
                })
            }
            other => other,
        }
    }
}
