//! `backstop pull`: many files at once, each retried on its own, resumed
//! by Range, checked by hash.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use backstop_core::Policy;
use backstop_http::Client;
use backstop_hub::{Cache, Hub};
use backstop_transfer::{
    ConnectionLimit, FileReport, Item, ListEntry, Options, Outcome, Placement, Plan, Planned,
    Progress, Pull, RateLimit, Sha256Sums, Source, Summary, confine_on_disk, parse_list, resolve,
};
use tokio_util::sync::CancellationToken;

use crate::cli::{PullArgs, PullSource, parse_source};
use crate::progress::{Bars, Both, Lines, Notice, Tally, outcome, shown, with_causes};
use crate::report::{Report, exit, plural};
use crate::results::{JsonResults, Known};

pub async fn run(args: PullArgs, quiet: bool) -> Result<(), Report> {
    let list = read_list(&args)?;
    let sums = read_sums(&args)?;
    let sources: Vec<&PullSource> = args
        .sources
        .iter()
        .chain(list.iter().map(|e| &e.source))
        .collect();
    let place = Place::of(&args, &sources)?;
    if let Place::Folder(dir) = &place {
        check_outs(&list, dir, args.input_file.as_deref())?;
    }
    let client = args.retry.client_trusting(args.ca_file.as_deref())?;
    let hub = Hub::from_env(client.clone())?;
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

    // Listing, naming and checking everything first: bad input changes
    // nothing on disk.
    let mut items = tokio::select! {
        items = items(&args, &list, &hub, &client) => items?,
        () = crate::interrupted() => return Err(stopped(&deadline_passed, "before any download started")),
        () = token.cancelled() => return Err(stopped(&deadline_passed, "before any download started")),
    };
    if let Some(sums) = &sums {
        sums.apply(&mut items)?;
    }
    let (plan, unchanged) = match &place {
        Place::Folder(dir) => unchanged_tar_layers(Plan::new(dir, items)?, dir),
        Place::HubCache(cache) => (Plan::in_hub_cache(cache, items)?, Vec::new()),
    };

    let names: Vec<String> = plan.files.iter().map(|f| f.item.name.clone()).collect();
    let (view, notice): (Arc<dyn Progress>, Arc<dyn Notice>) = if quiet {
        (Arc::new(()), Arc::new(()))
    } else if std::io::stderr().is_terminal() {
        let bars = Arc::new(Bars::new(names));
        (bars.clone(), bars)
    } else {
        let lines = Arc::new(Lines::new(names));
        (lines.clone(), lines)
    };
    let results = args.json.then(|| {
        let known = plan.files.iter().chain(&unchanged).map(known).collect();
        Arc::new(JsonResults::new(known))
    });
    let progress: Arc<dyn Progress> = match &results {
        Some(results) => Arc::new(Both(view, results.clone())),
        None => view,
    };
    watch_signals(token.clone(), notice);
    let mut summary = Pull::new(client)
        .options(options(&args))
        .progress(progress)
        .cancel_on(token)
        .run(&plan)
        .await?;
    let unpacked = match &place {
        Place::Folder(dir) => unpack_tar_layers(&summary, &plan, dir),
        Place::HubCache(_) => Ok(()),
    };
    for planned in unchanged {
        let report = unchanged_report(planned);
        if let Some(results) = &results {
            results.file(summary.files.len(), &report);
        }
        summary.files.push(report);
    }
    print_summary(&summary, quiet);
    if let Some(results) = &results {
        results.total(&tally(&summary), &[]);
    }
    if !quiet {
        print_snapshots(&plan, &summary);
    }
    unpacked?;
    verdict(&summary, &deadline_passed)
}

/// Where the files of a pull go.
enum Place {
    /// Under a folder, named after their sources.
    Folder(PathBuf),
    /// In the Hugging Face cache, as huggingface_hub keeps it.
    HubCache(Cache),
}

impl Place {
    /// `--dir`, or the Hugging Face cache with `--cache` or when every
    /// source is an hf:// one, or else the current folder. A run that
    /// mixes hf:// and other sources without `--dir` is refused: half of
    /// it would land where the user did not look.
    fn of(args: &PullArgs, sources: &[&PullSource]) -> Result<Place, Report> {
        let is_hub = |s: &&PullSource| matches!(s, PullSource::Transfer(Source::Hub(_)));
        let other = sources.iter().copied().find(|s| !is_hub(s));
        let any_hub = sources.iter().any(is_hub);
        match (&args.dir, other) {
            (Some(dir), _) => Ok(Place::Folder(dir.clone())),
            (None, None) => Ok(Place::HubCache(Cache::from_env()?)),
            (None, Some(_)) if !args.cache && !any_hub => Ok(Place::Folder(PathBuf::from("."))),
            (None, Some(other)) => Err(Report::new(
                exit::USAGE,
                format!(
                    "{} cannot go to the Hugging Face cache: it holds hf:// sources only",
                    source_name(other)
                ),
            )
            .hint("give --dir DIR to put every source in DIR, or pull the hf:// sources in a run of their own")),
        }
    }
}

fn source_name(source: &PullSource) -> String {
    match source {
        PullSource::Transfer(t) => t.to_string(),
        PullSource::Oci(o) => o.to_string(),
    }
}

/// For a pull into the Hugging Face cache, one line per snapshot whose
/// files all arrived: where transformers and vLLM find it.
fn print_snapshots(plan: &Plan, summary: &Summary) {
    let mut snapshots: Vec<(&Path, bool)> = Vec::new();
    for (planned, report) in plan.files.iter().zip(&summary.files) {
        let Placement::HubCache(slot) = &planned.placement else {
            continue;
        };
        let depth = planned.item.name.split('/').count();
        let Some(snapshot) = slot.pointer.ancestors().nth(depth) else {
            continue;
        };
        let arrived = report.outcome.is_success();
        match snapshots.iter_mut().find(|(s, _)| *s == snapshot) {
            Some((_, all)) => *all &= arrived,
            None => snapshots.push((snapshot, arrived)),
        }
    }
    for (snapshot, _) in snapshots.iter().filter(|(_, all)| *all) {
        eprintln!("  in the Hugging Face cache: {}", snapshot.display());
    }
}

/// The plan without the tar layers of oci:// sources that an earlier pull
/// unpacked under `dir` and whose files are unchanged since
/// ([`backstop_oci::UnpackedLayer`]), and those left out.
fn unchanged_tar_layers(plan: Plan, dir: &Path) -> (Plan, Vec<Planned>) {
    let (unchanged, files): (Vec<_>, Vec<_>) = plan.files.into_iter().partition(|planned| {
        let item = &planned.item;
        item.name.ends_with(backstop_oci::TAR_SUFFIX)
            && item
                .sha256
                .zip(planned.validators())
                .is_some_and(|(digest, validators)| {
                    backstop_oci::UnpackedLayer::is_current(validators, dir, digest)
                })
    });
    (Plan { files }, unchanged)
}

/// The report of a tar layer left out of the plan: already there.
fn unchanged_report(planned: Planned) -> FileReport {
    FileReport {
        name: planned.item.name,
        dest: planned.dest,
        fetched: 0,
        outcome: Outcome::AlreadyThere {
            bytes: planned.item.size.unwrap_or(0),
        },
    }
}

/// What `--json` knows of a file before it moves; a file of the Hugging
/// Face cache is where its snapshot shows it, not its blob.
fn known(planned: &Planned) -> Known {
    let path = match &planned.placement {
        Placement::HubCache(slot) => &slot.pointer,
        Placement::Folder { .. } => &planned.dest,
    };
    Known {
        source: planned.item.origin.clone(),
        path: path.display().to_string(),
        size: planned.item.size,
        sha256: planned.item.sha256,
    }
}

/// The sources of the pull list (`-i FILE`), each parsed as on the
/// command line. A bad line is a usage error naming it; nothing is
/// fetched.
fn read_list(args: &PullArgs) -> Result<Vec<ListEntry<PullSource>>, Report> {
    let Some(path) = &args.input_file else {
        return Ok(Vec::new());
    };
    if args.sha256sums.as_deref() == Some(Path::new("-")) && path == Path::new("-") {
        return Err(Report::new(
            exit::USAGE,
            "-i - and --sha256sums - cannot both read standard input",
        ));
    }
    let text = read_input(path, "the pull list")?;
    let bad = |e: backstop_transfer::BadLine| {
        Report::new(exit::USAGE, format!("{}: {e}", path.display())).hint("nothing was fetched")
    };
    let list = parse_list(&text, parse_source).map_err(bad)?;
    for entry in &list {
        let url = matches!(entry.source, PullSource::Transfer(Source::Url(_)));
        if !url && (entry.sha256.is_some() || entry.out.is_some()) {
            return Err(bad(backstop_transfer::BadLine {
                line: entry.line,
                reason: "sha256= and out= name one file: give them to a URL (hf:// and oci:// files are checked against their own digests and keep their paths)".to_owned(),
            }));
        }
    }
    Ok(list)
}

/// Each `out=` of the pull list stays inside `dir` on disk too: no folder
/// on its way is a symbolic link.
fn check_outs(
    list: &[ListEntry<PullSource>],
    dir: &Path,
    file: Option<&Path>,
) -> Result<(), Report> {
    for entry in list {
        if let Some(out) = &entry.out
            && let Err(why) = confine_on_disk(dir, out)
        {
            let shown_file = file.map(|f| f.display().to_string()).unwrap_or_default();
            return Err(Report::new(
                exit::USAGE,
                format!(
                    "{shown_file}: line {}: out={}: {why}",
                    entry.line,
                    shown(out)
                ),
            )
            .hint("nothing was fetched"));
        }
    }
    Ok(())
}

/// The `--sha256sums` list.
fn read_sums(args: &PullArgs) -> Result<Option<Sha256Sums>, Report> {
    let Some(path) = &args.sha256sums else {
        return Ok(None);
    };
    let text = read_input(path, "the sha256 list")?;
    Sha256Sums::parse(&text).map(Some).map_err(|e| {
        Report::new(exit::USAGE, format!("{}: {e}", path.display())).hint("nothing was fetched")
    })
}

/// A file the user gives, or standard input for `-`.
fn read_input(path: &Path, what: &str) -> Result<String, Report> {
    let read = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    read.map_err(|e| {
        Report::from_error(exit::USAGE, &e).detail(format!("reading {what} {}", path.display()))
    })
}

/// Unpacks each tar layer of an oci:// source that arrived, under `dir`,
/// removes the archive and records what it wrote, so that the next pull
/// leaves it alone while its files are unchanged.
fn unpack_tar_layers(summary: &Summary, plan: &Plan, dir: &Path) -> Result<(), Report> {
    for (file, planned) in summary.files.iter().zip(&plan.files) {
        if !file.name.ends_with(backstop_oci::TAR_SUFFIX) || !file.outcome.is_success() {
            continue;
        }
        let archive = &file.dest;
        let unpacked = backstop_oci::unpack(archive, dir);
        // Refused or not, the archive is not a file of the model.
        let _ = std::fs::remove_file(archive);
        let written = unpacked.map_err(|e| {
            Report::from_error(exit::FAILURE, &e).detail(format!("the layer {}", shown(&file.name)))
        })?;
        tracing::debug!("{}: unpacked {} files", file.name, written.len());
        // Without the record the layer is fetched again next time: a cost,
        // not a fault.
        if let Some((digest, validators)) = planned.item.sha256.zip(planned.validators()) {
            let kept = backstop_oci::UnpackedLayer::of(dir, digest, &written)
                .and_then(|layer| layer.save(validators));
            if let Err(e) = kept {
                tracing::debug!("cannot record what {} unpacked: {e}", file.name);
            }
        }
    }
    Ok(())
}

/// The files of every source: URLs and Hub repositories, then the layers
/// of each oci:// artifact, then the pull list's, line by line.
async fn items(
    args: &PullArgs,
    list: &[ListEntry<PullSource>],
    hub: &Hub,
    client: &Client,
) -> Result<Vec<Item>, Report> {
    let transfer: Vec<Source> = args
        .sources
        .iter()
        .filter_map(|s| match s {
            PullSource::Transfer(t) => Some(t.clone()),
            PullSource::Oci(_) => None,
        })
        .collect();
    let mut items = if transfer.is_empty() {
        Vec::new()
    } else {
        resolve(&transfer, hub, &args.sha256s, &args.headers).await?
    };
    let credentials = backstop_oci::CredentialFiles::from_env();
    for source in &args.sources {
        if let PullSource::Oci(oci) = source {
            items.extend(oci_items(args, client, &credentials, oci).await?);
        }
    }
    for entry in list {
        match &entry.source {
            PullSource::Transfer(source) => {
                let digests = entry.sha256.as_slice();
                let mut found =
                    resolve(std::slice::from_ref(source), hub, digests, &args.headers).await?;
                if let Some(out) = &entry.out {
                    found.iter_mut().for_each(|item| item.name.clone_from(out));
                }
                items.extend(found);
            }
            PullSource::Oci(oci) => items.extend(oci_items(args, client, &credentials, oci).await?),
        }
    }
    Ok(items)
}

/// The layers of an oci:// artifact.
async fn oci_items(
    args: &PullArgs,
    client: &Client,
    credentials: &backstop_oci::CredentialFiles,
    oci: &backstop_oci::OciSource,
) -> Result<Vec<Item>, Report> {
    let registry_name = oci.reference.registry();
    let found = credentials
        .lookup(registry_name)
        .map_err(|e| Report::from_error(exit::FAILURE, &e))?;
    let registry = Arc::new(backstop_oci::Registry::new(
        client.clone(),
        registry_name,
        args.plain_http,
        found,
    )?);
    Ok(backstop_oci::pull_items(&registry, oci, &args.retry.policy()).await?)
}

/// The transfer preset with the retry flags applied.
fn options(args: &PullArgs) -> Options {
    // The command's deadline is kept by run(); a per-run one would start
    // again with every resumed stream.
    let policy = args.retry.apply(Policy::transfer(0)).with_deadline(None);
    let attempt_timeout = args.retry.transfer_attempt_timeout();
    Options {
        jobs: usize::from(args.jobs),
        streams: usize::from(args.streams),
        policy,
        attempt_timeout,
        min_progress: crate::cli::MinProgressArg::window(args.min_progress),
        skip_existing: args.skip_existing,
        limit: args.limit_rate.map(|rate| Arc::new(RateLimit::new(rate))),
        connections: Arc::new(ConnectionLimit::new(
            NonZeroUsize::new(usize::from(args.max_connections_per_host))
                .unwrap_or(NonZeroUsize::MIN),
        )),
        ..Options::default()
    }
}

/// Ctrl-C or SIGTERM stops every file cleanly (partial files synced and
/// recorded); a second one exits at once.
fn watch_signals(token: CancellationToken, notice: Arc<dyn Notice>) {
    tokio::spawn(async move {
        crate::interrupted().await;
        notice.notice("backstop: stopping; partial files are kept (Ctrl-C again to quit at once)");
        token.cancel();
        crate::interrupted().await;
        std::process::exit(i32::from(exit::INTERRUPTED));
    });
}

fn stopped(deadline_passed: &AtomicBool, when: &str) -> Report {
    if deadline_passed.load(Ordering::Acquire) {
        Report::new(exit::TEMPFAIL, format!("deadline passed {when}"))
    } else {
        Report::new(exit::INTERRUPTED, format!("interrupted {when}"))
    }
}

/// How the files ended, counted.
fn tally(summary: &Summary) -> Tally<'static> {
    let count = |f: fn(&Outcome) -> bool| summary.files.iter().filter(|r| f(&r.outcome)).count();
    Tally {
        verb: "pulled",
        noun: ("file", "files"),
        moved: "downloaded",
        bytes_verb: "fetched",
        total: summary.files.len(),
        done: count(|o| matches!(o, Outcome::Downloaded { .. })),
        there: count(|o| matches!(o, Outcome::AlreadyThere { .. })),
        failed: count(|o| matches!(o, Outcome::Failed(_))),
        interrupted: count(|o| matches!(o, Outcome::Interrupted { .. })),
        bytes: summary.fetched(),
    }
}

/// The total on stderr, then a line for every file not in place, with
/// its causes: each file that arrived has had its line as it ended.
fn print_summary(summary: &Summary, quiet: bool) {
    let tally = tally(summary);
    if quiet && tally.failed == 0 {
        return;
    }
    eprintln!("{}", tally.line());
    for file in &summary.files {
        let shown = match file.outcome {
            Outcome::Failed(_) => true,
            Outcome::Interrupted { .. } => !quiet,
            Outcome::Downloaded { .. } | Outcome::AlreadyThere { .. } => false,
        };
        if shown {
            eprintln!("{}", summary_line(file));
        }
    }
}

fn summary_line(file: &FileReport) -> String {
    let text = match &file.outcome {
        Outcome::Failed(e) => format!("failed: {}", with_causes(e)),
        done => outcome(done),
    };
    format!("  {}: {text}", shown(&file.name))
}

/// The exit code and message for how the files ended.
fn verdict(summary: &Summary, deadline_passed: &AtomicBool) -> Result<(), Report> {
    if summary.succeeded() {
        return Ok(());
    }
    const RESUME: &str =
        "run the same command again to resume; finished files are not fetched again";
    if summary.interrupted() {
        return Err(stopped(deadline_passed, "with files unfinished")
            .hint(format!("partial files are kept; {RESUME}")));
    }
    let failed = summary
        .files
        .iter()
        .filter(|f| matches!(f.outcome, Outcome::Failed(_)))
        .count();
    let message = format!(
        "{failed} of {} did not arrive",
        plural(summary.files.len() as u64, "file", "files")
    );
    if summary.failures_temporary() {
        Err(Report::new(exit::TEMPFAIL, message)
            .hint(format!("every failure was temporary; {RESUME}")))
    } else {
        Err(Report::new(exit::FAILURE, message))
    }
}
