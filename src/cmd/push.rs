//! `backstop push`: model files to an OCI registry as a ModelPack
//! artifact, each blob on its own, resumed from the registry's offset.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backstop_core::Policy;
use backstop_oci::{
    ArtifactOptions, BlobOutcome, CredentialFiles, ModelInfo, PushOptions, PushProgress,
    PushSummary, Pusher, Registry, SessionStore, UploadOptions,
};
use backstop_transfer::{Event, Progress};
use indicatif::HumanBytes;
use tokio_util::sync::CancellationToken;

use crate::cli::PushArgs;
use crate::progress::{Bars, Finish, Lines, Notice, Tally, line_of, shown, with_causes};
use crate::report::{Report, exit, plural};
use crate::results::{JsonResults, Known};

pub async fn run(args: PushArgs, state: Option<&str>, quiet: bool) -> Result<(), Report> {
    let reference = &args.target;
    // Reading and hashing every file first: bad input sends nothing.
    let files = backstop_oci::collect(&args.sources).map_err(artifact_report)?;
    let options = ArtifactOptions {
        info: ModelInfo {
            name: args.name.clone(),
            family: args.family.clone(),
            architecture: args.architecture.clone(),
            format: args.format.clone(),
            param_size: args.param_size.clone(),
            precision: args.precision.clone(),
            quantization: args.quantization.clone(),
            created: args.created.clone(),
        },
        roles: args.roles.clone(),
    };
    let hashing = tokio::task::spawn_blocking(move || backstop_oci::build(files, &options));
    let artifact = tokio::select! {
        built = hashing => built
            .map_err(|e| Report::new(exit::FAILURE, format!("hashing stopped: {e}")))?
            .map_err(artifact_report)?,
        () = crate::interrupted() => return Err(Report::new(exit::INTERRUPTED, "interrupted while hashing the files; nothing was sent")),
    };

    let credentials = CredentialFiles::from_env()
        .lookup(reference.registry())
        .map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    let client = args.retry.client_trusting(args.ca_file.as_deref())?;
    let registry = Registry::new(client, reference.registry(), args.plain_http, credentials)?;

    let token = CancellationToken::new();
    let deadline_passed = Arc::new(AtomicBool::new(false));
    if let Some(deadline) = args.retry.backoff.deadline {
        let (token, passed) = (token.clone(), Arc::clone(&deadline_passed));
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            passed.store(true, Ordering::Release);
            token.cancel();
        });
    }
    let mut names: Vec<String> = artifact
        .layers
        .iter()
        .map(|l| l.source.filepath.clone())
        .collect();
    names.push("config".to_owned());
    let (view, notice): (Arc<dyn Finish>, Arc<dyn Notice>) = if quiet {
        (Arc::new(()), Arc::new(()))
    } else if std::io::stderr().is_terminal() {
        let bars = Arc::new(Bars::new(names));
        (bars.clone(), bars)
    } else {
        let lines = Arc::new(Lines::new(names));
        (lines.clone(), lines)
    };
    watch_signals(token.clone(), notice);
    let results = args
        .json
        .then(|| Arc::new(JsonResults::new(known(&artifact))));
    let view = View {
        view,
        results: results.clone(),
    };
    let summary = Pusher::new(&registry, reference)
        .options(push_options(&args, state)?)
        .progress(&view)
        .cancel_on(token)
        .run(&artifact)
        .await;
    print_summary(&summary, quiet);
    let pushed = summary.succeeded().then(|| match reference.digest() {
        Some(_) => reference.to_string(),
        None => format!("{reference}@sha256:{}", summary.digest),
    });
    match (&results, &pushed) {
        (Some(results), _) => results.total(
            &tally(&summary),
            &[
                ("reference", serde_json::json!(pushed)),
                (
                    "digest",
                    serde_json::json!(format!("sha256:{}", summary.digest)),
                ),
            ],
        ),
        (None, Some(pushed)) => println!("{pushed}"),
        (None, None) => {}
    }
    verdict(&summary, &deadline_passed, reference.registry())
}

/// What `--json` knows of each blob before it moves: the layers, then
/// the config.
fn known(artifact: &backstop_oci::Artifact) -> Vec<Known> {
    let layers = artifact.layers.iter().map(|layer| Known {
        source: layer.source.path.display().to_string(),
        path: layer.source.filepath.clone(),
        size: Some(layer.size),
        sha256: Some(layer.digest),
    });
    let config = Known {
        source: "config".to_owned(),
        path: "config".to_owned(),
        size: Some(artifact.config.len() as u64),
        sha256: Some(artifact.config_digest),
    };
    layers.chain([config]).collect()
}

fn push_options(args: &PushArgs, state: Option<&str>) -> Result<PushOptions, Report> {
    // The command's deadline is kept by run().
    let policy = args.retry.apply(Policy::transfer(0)).with_deadline(None);
    Ok(PushOptions {
        upload: UploadOptions {
            chunk_size: args.chunk_size,
            mount_from: args.mount_from.clone(),
            policy,
            sessions: Some(SessionStore::new(crate::state::uploads_dir(state)?)),
            min_progress: crate::cli::MinProgressArg::window(args.min_progress),
        },
        timeout_by_size: args.retry.attempt_timeout.is_none(),
        jobs: usize::from(args.jobs),
        api_policy: args.retry.policy().with_deadline(None),
    })
}

fn artifact_report(e: backstop_oci::ArtifactError) -> Report {
    use backstop_oci::ArtifactError as E;
    let code = match &e {
        E::Io { source, .. } if source.kind() != std::io::ErrorKind::NotFound => exit::FAILURE,
        _ => exit::USAGE,
    };
    let report = Report::from_error(code, &e);
    match e {
        E::NoRole(_) => report.hint(
            "give them one with --role PATTERN=ROLE (weight, weight.config, doc, code, dataset)",
        ),
        _ => report,
    }
}

/// The bars and lines of `pull`, told about blobs, and `--json`'s
/// results.
struct View {
    view: Arc<dyn Finish>,
    results: Option<Arc<JsonResults>>,
}

impl Progress for View {
    fn advance(&self, file: usize, bytes: u64) {
        self.view.advance(file, bytes);
    }

    fn event(&self, file: usize, event: Event<'_>) {
        self.view.event(file, event);
        if let Some(results) = &self.results {
            results.event(file, event);
        }
    }
}

impl PushProgress for View {
    fn finished(&self, index: usize, name: &str, outcome: &BlobOutcome) {
        self.view
            .finish(index, &line_of(name, &outcome_text(outcome)));
        if let Some(results) = &self.results {
            results.blob(index, outcome);
        }
    }
}

/// How a blob's end is told: "pushed, 4.68 GiB", "already there".
fn outcome_text(outcome: &BlobOutcome) -> String {
    match outcome {
        BlobOutcome::Uploaded { sent, resumed_from } if *resumed_from > 0 => format!(
            "pushed, {} continued from {}",
            HumanBytes(*sent),
            HumanBytes(*resumed_from)
        ),
        BlobOutcome::Uploaded { sent, .. } => format!("pushed, {}", HumanBytes(*sent)),
        BlobOutcome::AlreadyThere => "already there".to_owned(),
        BlobOutcome::Mounted => "mounted".to_owned(),
        BlobOutcome::Interrupted { offset, .. } => {
            format!("interrupted, {} held by the registry", HumanBytes(*offset))
        }
        BlobOutcome::Failed(e) => format!("failed: {e}"),
    }
}

/// Ctrl-C or SIGTERM stops every blob between chunks (sessions recorded);
/// a second one exits at once.
fn watch_signals(token: CancellationToken, notice: Arc<dyn Notice>) {
    tokio::spawn(async move {
        crate::interrupted().await;
        notice.notice("backstop: stopping after the chunks in flight; the upload sessions are kept (Ctrl-C again to quit at once)");
        token.cancel();
        crate::interrupted().await;
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
}

/// How the blobs ended, counted.
fn tally(summary: &PushSummary) -> Tally<'static> {
    let count =
        |f: fn(&BlobOutcome) -> bool| summary.blobs.iter().filter(|b| f(&b.outcome)).count();
    Tally {
        verb: "pushed",
        noun: ("blob", "blobs"),
        moved: "pushed",
        bytes_verb: "sent",
        total: summary.blobs.len(),
        done: count(|o| matches!(o, BlobOutcome::Uploaded { .. })),
        there: count(|o| matches!(o, BlobOutcome::AlreadyThere | BlobOutcome::Mounted)),
        failed: count(|o| matches!(o, BlobOutcome::Failed(_))),
        interrupted: count(|o| matches!(o, BlobOutcome::Interrupted { .. })),
        bytes: summary.sent(),
    }
}

fn print_summary(summary: &PushSummary, quiet: bool) {
    let tally = tally(summary);
    if (quiet && tally.failed == 0) || summary.blobs.is_empty() {
        return;
    }
    eprintln!("{}", tally.line());
    for blob in &summary.blobs {
        if let BlobOutcome::Failed(e) = &blob.outcome {
            eprintln!("  {}: failed: {}", shown(&blob.name), with_causes(e));
        }
    }
}

fn verdict(
    summary: &PushSummary,
    deadline_passed: &AtomicBool,
    registry: &str,
) -> Result<(), Report> {
    if summary.succeeded() {
        return Ok(());
    }
    const RESUME: &str =
        "run the same command again: it continues each blob from what the registry holds";
    if summary.interrupted() {
        let report = if deadline_passed.load(Ordering::Acquire) {
            Report::new(exit::TEMPFAIL, "deadline passed with blobs unfinished")
        } else {
            Report::new(exit::INTERRUPTED, "interrupted with blobs unfinished")
        };
        return Err(report.hint(RESUME));
    }
    if summary.blobs.is_empty()
        && let Some(Err(e)) = &summary.manifest
    {
        // The registry refused or could not be reached before any blob.
        return Err(registry_report(e, registry));
    }
    if let Some(Err(e)) = &summary.manifest {
        return Err(registry_report(e, registry)
            .detail("every blob is in the registry; only the manifest is missing"));
    }
    let failed = summary
        .blobs
        .iter()
        .filter(|b| matches!(b.outcome, BlobOutcome::Failed(_)))
        .count();
    let message = format!(
        "{failed} of {} did not get there; the manifest was not pushed",
        plural(summary.blobs.len() as u64, "blob", "blobs")
    );
    if summary.failures_temporary() {
        Err(Report::new(exit::TEMPFAIL, message)
            .hint(format!("every failure was temporary; {RESUME}")))
    } else if summary
        .failures()
        .any(|e| e.ending() == Some(backstop_core::Ending::Auth))
    {
        Err(Report::new(exit::FAILURE, message).hint(login_hint(registry)))
    } else {
        Err(Report::new(exit::FAILURE, message))
    }
}

fn login_hint(registry: &str) -> String {
    format!(
        "log in with `backstop login {registry} -u USER --password-stdin`, or check that the user may push to this repository"
    )
}

fn registry_report(e: &backstop_oci::Error, registry: &str) -> Report {
    let code = match e.ending() {
        Some(ending) => crate::report::code_for(ending),
        None => exit::FAILURE,
    };
    let report = Report::from_error(code, e);
    if e.ending() == Some(backstop_core::Ending::Auth) {
        report.hint(login_hint(registry))
    } else {
        report
    }
}
