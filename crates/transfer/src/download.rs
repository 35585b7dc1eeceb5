//! One file, from whatever a partial file already holds to its place in
//! the destination: streams under the retry engine, checkpoints while they
//! run, then the size and the hash, and only then the rename.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use backstop_core::{Ending, RetryError};
use backstop_http::header::{ACCEPT_RANGES, CONTENT_LENGTH, HeaderName, HeaderValue};
use backstop_http::{Client, Method, Prepared, RequestBuilder, StatusCode};
use futures_util::future::try_join_all;
use tokio_util::sync::CancellationToken;

use crate::destination::Destination;
use crate::record::{Record, Segment};
use crate::stream::{self, FileCtx, Learned, Stream};
use crate::validators::Validators;
use crate::writer::{Hashed, Writer, WriterConfig, Written};
use crate::{
    Event, FileError, FileReport, Item, Options, Outcome, Placement, Planned, Progress, Sha256,
    TransferFailure,
};

/// One file of a pull and everything it needs.
pub(crate) struct Job<'a> {
    pub planned: &'a Planned,
    pub id: usize,
    pub client: &'a Client,
    pub options: &'a Options,
    pub progress: &'a dyn Progress,
    pub cancel: &'a CancellationToken,
}

/// The request for `item`, with its token and headers.
pub(crate) fn request<'c>(client: &'c Client, method: Method, item: &Item) -> RequestBuilder<'c> {
    let mut request = client.request(method, item.url.as_str());
    if let Some(token) = &item.token {
        request = request.bearer_auth(token);
    }
    for (name, value) in &item.headers {
        request = request.header(name, value);
    }
    request
}

/// Downloads the file; never fails, the outcome says how it went. The
/// caller tells [`Event::Finish`], once it knows how the file ended.
pub(crate) async fn download(job: &Job<'_>) -> FileReport {
    let fetched = AtomicU64::new(0);
    let outcome = match fetch(job, &fetched).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    };
    FileReport {
        name: job.planned.item.name.clone(),
        dest: job.planned.dest.clone(),
        fetched: fetched.load(Ordering::Relaxed),
        outcome,
    }
}

pub(crate) fn local(path: &Path) -> impl Fn(io::Error) -> FileError + '_ {
    move |source| FileError::Local {
        path: path.to_owned(),
        source,
    }
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("a blocking task failed: {e}")))?
}

pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

async fn fetch(job: &Job<'_>, fetched: &AtomicU64) -> Result<Outcome, FileError> {
    let prepared = request(job.client, Method::GET, &job.planned.item)
        .prepare()
        .map_err(FileError::Request)?;
    match &job.planned.placement {
        Placement::HubCache(slot) => crate::cache::fetch(job, slot, &prepared, fetched).await,
        Placement::Folder { .. } => into_folder(job, &prepared, fetched).await,
    }
}

/// A file of a folder: kept when proven current, else downloaded and
/// renamed into place, with its validators kept for the next pull.
async fn into_folder(
    job: &Job<'_>,
    prepared: &Prepared<'_>,
    fetched: &AtomicU64,
) -> Result<Outcome, FileError> {
    // The destination decides how the bytes get there: a symbolic link
    // has its target replaced, a device or a FIFO is written through.
    let asked = &job.planned.dest;
    let resolved = match Destination::of(asked).map_err(local(asked))? {
        Destination::Through => return through(job, prepared, fetched).await,
        Destination::Replace(target) => Planned {
            item: job.planned.item.clone(),
            dest: target,
            placement: job.planned.placement.clone(),
        },
    };
    let job = &Job {
        planned: &resolved,
        ..*job
    };
    let planned = job.planned;
    let item = &planned.item;
    let keep = !job.options.replace_existing;

    let identity = backstop_http::redact_url(&item.url);
    // Known size, or what a HEAD says, to see whether the file is in place
    // and how many streams it can take; nothing is kept when the caller
    // replaces what is there.
    let found = if keep {
        look(job, &identity).await
    } else {
        Found::Fetch(probe(job).await)
    };
    let probe = match found {
        Found::InPlace(bytes) => {
            job.progress.event(
                job.id,
                Event::Start {
                    name: &item.name,
                    size: Some(bytes),
                    have: bytes,
                },
            );
            return Ok(Outcome::AlreadyThere { bytes });
        }
        Found::Fetch(probe) => probe,
    };
    let learned = Mutex::new(Learned::default());
    let finished = receive(job, prepared, probe, &identity, &learned, fetched).await;
    if keep && matches!(finished, Ok(Outcome::Downloaded { .. })) {
        keep_validators(planned, &identity, &learned);
    }
    finished
}

/// Downloads the file into its partial file, resuming what a record
/// describes as `identity`'s bytes, and renames it onto the destination
/// once its size and hash are right. `learned` collects what the server
/// said.
pub(crate) async fn receive(
    job: &Job<'_>,
    prepared: &Prepared<'_>,
    probe: Probe,
    identity: &str,
    learned: &Mutex<Learned>,
    fetched: &AtomicU64,
) -> Result<Outcome, FileError> {
    let planned = job.planned;
    let item = &planned.item;
    let (part, record_path) = (planned.part(), planned.record());
    let known = item.size.or(probe.size);
    let digest_text = item.sha256.map(|d| d.to_string());
    let (file, record) = open_part(planned, identity, digest_text.as_deref())?;
    {
        let mut l = learned.lock().unwrap_or_else(|p| p.into_inner());
        l.total = record.as_ref().and_then(|r| r.size).or(known);
        l.validator = record
            .as_ref()
            .and_then(|r| r.validator.as_deref())
            .and_then(|v| HeaderValue::from_str(v).ok());
    }
    let ranges_ok = item.size.is_some() || probe.ranges;
    let mut segments = match &record {
        Some(r) => r.segments.clone(),
        None => plan(known, job.options, ranges_ok),
    };
    if let [only] = segments.as_slice() {
        // Bytes past a single stream's record may not be on disk.
        file.set_len(only.done).map_err(local(&part))?;
    }
    let resumed_from: u64 = segments.iter().map(|s| s.done - s.start).sum();
    job.progress.event(
        job.id,
        Event::Start {
            name: &item.name,
            size: known.or(learned_total(learned)),
            have: resumed_from,
        },
    );

    let checkpoint = Checkpoint {
        file: Arc::clone(&file),
        path: record_path.clone(),
        base: Record::new(identity.to_owned(), item.size, digest_text),
        learned,
    };
    let mut hashed = item.sha256.map(|_| Hashed::default());
    let mut mismatches: Vec<Sha256> = Vec::new();
    let policy = job.options.policy_for(None);
    loop {
        let starts: Vec<u64> = segments.iter().map(|s| s.done).collect();
        let catch_up = match segments.as_slice() {
            [only] if only.start == 0 && hashed.is_some() => Some(only.done),
            _ => None,
        };
        let writer = Writer::start(
            Arc::clone(&file),
            WriterConfig {
                starts: &starts,
                hashed: hashed.take(),
                catch_up,
                record: Some(record_path.clone()),
            },
        );
        let streams: Vec<Stream> = segments
            .iter()
            .enumerate()
            .map(|(i, s)| Stream::new(i, s.end, s.done))
            .collect();
        let result = {
            let ctx = FileCtx {
                prepared,
                options: job.options,
                progress: job.progress,
                id: job.id,
                cancel: job.cancel,
                writer: &writer,
                expected: item.size,
                learned,
                fetched,
                bounded: segments.len() > 1,
                authorizer: item.authorizer.as_ref(),
            };
            round(&ctx, &streams, &segments, &checkpoint).await
        };
        hashed = writer.finish().await.map_err(local(&part))?;
        for (segment, stream) in segments.iter_mut().zip(&streams) {
            segment.done = stream.pos();
            segment.end = segment.end.or(learned_total(learned));
        }
        if let Err(e) = result {
            if matches!(e.last_error(), Some(TransferFailure::RangeUnusable(_)))
                && segments.len() > 1
            {
                file.set_len(0).map_err(local(&part))?;
                remove(&record_path).map_err(local(&record_path))?;
                segments = plan(known, job.options, false);
                hashed = item.sha256.map(|_| Hashed::default());
                job.progress.event(
                    job.id,
                    Event::Restart {
                        reason: "the server does not serve ranges; one stream from the start",
                    },
                );
                continue;
            }
            let have = checkpoint.keep_or_discard(&part, &segments).await?;
            return match e.ending {
                Ending::Cancelled => Ok(Outcome::Interrupted { have }),
                _ => Err(FileError::Transfer {
                    host: prepared.host().to_owned(),
                    source: Box::new(e),
                }),
            };
        }

        job.progress.event(job.id, Event::Verify);
        let len = segments
            .iter()
            .map(|s| s.end.unwrap_or(s.done))
            .max()
            .unwrap_or(0);
        file.set_len(len).map_err(local(&part))?;
        let expected = item
            .sha256
            .or(learned.lock().unwrap_or_else(|p| p.into_inner()).linked);
        let Some(expected) = expected else {
            let downloaded = Outcome::Downloaded {
                bytes: len,
                sha256: None,
                resumed_from,
            };
            return finish(job, &file, downloaded).await;
        };
        let actual = digest_of(&file, hashed.take(), len)
            .await
            .map_err(local(&part))?;
        if actual == expected {
            let downloaded = Outcome::Downloaded {
                bytes: len,
                sha256: Some(actual),
                resumed_from,
            };
            return finish(job, &file, downloaded).await;
        }
        // A corrupted body is never accepted: start over, unless the same
        // wrong bytes came twice (then the expected digest is what is
        // wrong) or the attempts are spent.
        let repeated = mismatches.contains(&actual);
        mismatches.push(actual);
        if repeated || mismatches.len() >= policy.max_attempts() as usize {
            drop(file);
            remove(&part).map_err(local(&part))?;
            remove(&record_path).map_err(local(&record_path))?;
            return Err(FileError::Digest {
                expected,
                actual,
                repeated,
            });
        }
        file.set_len(0).map_err(local(&part))?;
        remove(&record_path).map_err(local(&record_path))?;
        segments = plan(known, job.options, ranges_ok);
        hashed = Some(Hashed::default());
        job.progress.event(
            job.id,
            Event::Restart {
                reason: "sha256 mismatch: the bytes are not the file expected",
            },
        );
    }
}

/// Records what the file in place was downloaded as, so that the next
/// pull can revalidate it; a file with a hash to check needs no record,
/// and one whose server sent no validator can only be fetched again.
/// Losing the record costs a download, not data: failures are logged.
fn keep_validators(planned: &Planned, identity: &str, learned: &Mutex<Learned>) {
    let Some(path) = planned.validators() else {
        return;
    };
    let record = match planned.item.sha256 {
        Some(_) => None,
        None => {
            let l = learned.lock().unwrap_or_else(|p| p.into_inner());
            Validators::of(
                identity,
                &planned.dest,
                l.etag.as_ref(),
                l.last_modified.as_ref(),
            )
        }
    };
    let kept = match record {
        Some(record) => record.save(path),
        None => remove(path),
    };
    if let Err(e) = kept {
        tracing::debug!(
            "cannot keep the validators of {} in {}: {e}",
            planned.dest.display(),
            path.display()
        );
    }
}

/// What [`look`] found.
enum Found {
    /// The file in place, of this many bytes, is the one expected.
    InPlace(u64),
    /// It must be fetched; what a HEAD said, when one was sent.
    Fetch(Probe),
}

/// What is worth knowing before fetching a file not kept: for a file of
/// unknown size that several streams could share, what a HEAD says.
pub(crate) async fn probe(job: &Job<'_>) -> Probe {
    let item = &job.planned.item;
    if item.size.is_none() && job.options.streams > 1 {
        probe_head(job, &[]).await
    } else {
        Probe::default()
    }
}

/// Whether the file in place is the one expected: by its hash when one is
/// known; else, with [`Options::skip_existing`], by its size; else only
/// when the server answers 304 to a conditional HEAD with the validators
/// recorded when it arrived (nothing else proves it current). The HEAD
/// also tells the size and whether ranges are served, when the listing
/// did not.
async fn look(job: &Job<'_>, identity: &str) -> Found {
    let planned = job.planned;
    let (item, dest, options) = (&planned.item, &planned.dest, job.options);
    let on_disk = std::fs::metadata(dest)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len());
    let validators = match (on_disk, planned.validators()) {
        (Some(_), Some(path)) if item.sha256.is_none() && !options.skip_existing => {
            Validators::load(path, identity, dest)
        }
        _ => None,
    };
    let conditions = validators
        .as_ref()
        .map(Validators::conditions)
        .unwrap_or_default();
    let mut probe = Probe::default();
    if !conditions.is_empty() || (item.size.is_none() && (on_disk.is_some() || options.streams > 1))
    {
        probe = probe_head(job, &conditions).await;
    }
    let Some(len) = on_disk else {
        return Found::Fetch(probe);
    };
    let known = item.size.or(probe.size);
    let current = match item.sha256 {
        Some(expected) => known == Some(len) && digest_matches(dest, expected).await,
        None if options.skip_existing => known == Some(len),
        None => {
            probe.not_modified
                && validators.is_some_and(|v| v.size() == len)
                && known.is_none_or(|k| k == len)
        }
    };
    if current {
        Found::InPlace(len)
    } else {
        Found::Fetch(probe)
    }
}

/// Downloads into a destination that is not a regular file (a FIFO, a
/// device), as curl does: opened once and written through in order by one
/// stream, which resumes by Range after a cut like any other. There is no
/// partial file, no record and no rename; what cannot be taken back (a
/// start over, a digest that does not match) fails the file.
async fn through(
    job: &Job<'_>,
    prepared: &Prepared<'_>,
    fetched: &AtomicU64,
) -> Result<Outcome, FileError> {
    let item = &job.planned.item;
    let dest = &job.planned.dest;
    let path = dest.clone();
    // Opening a FIFO waits for its reader: off the async threads.
    let file = blocking(move || OpenOptions::new().write(true).open(path))
        .await
        .map_err(local(dest))?;
    let file = Arc::new(file);
    job.progress.event(
        job.id,
        Event::Start {
            name: &item.name,
            size: item.size,
            have: 0,
        },
    );
    let learned = Mutex::new(Learned {
        total: item.size,
        ..Learned::default()
    });
    let hashed = item.sha256.map(|_| Hashed::default());
    let writer = Writer::start(
        Arc::clone(&file),
        WriterConfig {
            starts: &[0],
            hashed,
            catch_up: None,
            record: None,
        },
    );
    let stream = Stream::new(0, item.size, 0);
    let ctx = FileCtx {
        prepared,
        options: job.options,
        progress: job.progress,
        id: job.id,
        cancel: job.cancel,
        writer: &writer,
        expected: item.size,
        learned: &learned,
        fetched,
        bounded: false,
        authorizer: item.authorizer.as_ref(),
    };
    let result = stream::run(&ctx, &stream).await;
    let hashed = writer.finish().await.map_err(local(dest))?;
    let bytes = stream.pos();
    if let Err(e) = result {
        return match e.ending {
            Ending::Cancelled => Ok(Outcome::Interrupted { have: bytes }),
            _ => Err(FileError::Transfer {
                host: prepared.host().to_owned(),
                source: Box::new(e),
            }),
        };
    }
    let sha256 = match (item.sha256, hashed) {
        (Some(expected), Some(state)) => {
            let actual = blocking(move || state.finish(&file, bytes))
                .await
                .map_err(local(dest))?;
            if actual != expected {
                return Err(FileError::Digest {
                    expected,
                    actual,
                    repeated: false,
                });
            }
            Some(actual)
        }
        _ => None,
    };
    Ok(Outcome::Downloaded {
        bytes,
        sha256,
        resumed_from: 0,
    })
}

fn learned_total(learned: &Mutex<Learned>) -> Option<u64> {
    learned.lock().unwrap_or_else(|p| p.into_inner()).total
}

/// Syncs the complete partial file, renames it into place, forgets its
/// record, and returns `downloaded`, what the download came to.
async fn finish(
    job: &Job<'_>,
    file: &Arc<File>,
    downloaded: Outcome,
) -> Result<Outcome, FileError> {
    let (part, record) = (&job.planned.part(), &job.planned.record());
    let synced = Arc::clone(file);
    blocking(move || synced.sync_all())
        .await
        .map_err(local(part))?;
    let dest = &job.planned.dest;
    keep_permissions(dest, file);
    std::fs::rename(part, dest).map_err(local(dest))?;
    if let Some(parent) = dest.parent()
        && let Ok(dir) = File::open(parent)
    {
        // Makes the rename durable; losing it costs a download, not data.
        let _ = dir.sync_all();
    }
    remove(record).map_err(local(record))?;
    Ok(downloaded)
}

/// The SHA-256 of the file's first `len` bytes, from the state hashed as
/// they were written (catching up on any not hashed yet).
async fn digest_of(file: &Arc<File>, hashed: Option<Hashed>, len: u64) -> io::Result<Sha256> {
    let state = hashed.unwrap_or_default();
    let reader = Arc::clone(file);
    blocking(move || state.finish(&reader, len)).await
}

/// Opens the partial file beside `planned.dest` (creating the folder),
/// with its record when the record describes this download; a partial
/// file without such a record is started over, unless it is one
/// huggingface_hub left in its cache ([`adopted`]).
fn open_part(
    planned: &Planned,
    identity: &str,
    digest: Option<&str>,
) -> Result<(Arc<File>, Option<Record>), FileError> {
    let (part, record_path) = (planned.part(), planned.record());
    if let Some(parent) = planned.dest.parent() {
        std::fs::create_dir_all(parent).map_err(local(parent))?;
    }
    let part_len = std::fs::metadata(&part).map(|m| m.len()).ok();
    let record = part_len.and_then(|len| {
        Record::load(&record_path, len)
            .filter(|r| r.describes(identity, planned.item.size, digest))
            .or_else(|| adopted(planned, len, identity))
    });
    if record.is_none() {
        remove(&part).map_err(local(&part))?;
        remove(&record_path).map_err(local(&record_path))?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map_err(local(&part))?;
    Ok((Arc::new(file), record))
}

/// A record for a blob's `<etag>.incomplete` that has none: one that
/// huggingface_hub (before 2026) left when stopped, which it wrote in
/// order from byte 0, under the lock now held. It is taken up from its
/// length when the blob's sha256 is known, so that the whole file is
/// checked before it is used; anything else starts over.
fn adopted(planned: &Planned, len: u64, identity: &str) -> Option<Record> {
    let item = &planned.item;
    let (Placement::HubCache(_), Some(sha256), Some(size)) =
        (&planned.placement, item.sha256, item.size)
    else {
        return None;
    };
    if len == 0 || len > size {
        return None;
    }
    let mut record = Record::new(identity.to_owned(), Some(size), Some(sha256.to_string()));
    record.segments = vec![Segment {
        start: 0,
        end: Some(size),
        done: len,
    }];
    Some(record)
}

/// Gives the new file the permissions of the one it replaces (a private
/// file stays private); a new file keeps those it was created with.
fn keep_permissions(dest: &Path, file: &File) {
    if let Ok(meta) = std::fs::metadata(dest) {
        let _ = file.set_permissions(meta.permissions());
    }
}

/// Runs every stream of a round, saving checkpoints while they run.
async fn round(
    ctx: &FileCtx<'_>,
    streams: &[Stream],
    segments: &[Segment],
    checkpoint: &Checkpoint<'_>,
) -> Result<(), RetryError<TransferFailure>> {
    let done = CancellationToken::new();
    let work = async {
        let result = try_join_all(streams.iter().map(|s| stream::run(ctx, s))).await;
        done.cancel();
        result.map(|_| ())
    };
    let every = ctx.options.checkpoint_every;
    let ticker = async {
        loop {
            tokio::select! {
                () = done.cancelled() => break,
                () = tokio::time::sleep(every) => {
                    checkpoint.save(ctx.writer.written(), segments).await;
                }
            }
        }
    };
    let (result, ()) = tokio::join!(work, ticker);
    result
}

/// Records a partial file's progress.
struct Checkpoint<'a> {
    file: Arc<File>,
    path: PathBuf,
    base: Record,
    learned: &'a Mutex<Learned>,
}

impl Checkpoint<'_> {
    /// Syncs the partial file, then records what the writer had written
    /// before the sync, unless a truncation came in between.
    async fn save(&self, written: &Written, segments: &[Segment]) {
        let (generation, ends) = written.snapshot();
        let file = Arc::clone(&self.file);
        if let Err(e) = blocking(move || file.sync_data()).await {
            tracing::debug!("checkpoint of {} skipped: {e}", self.path.display());
            return;
        }
        if written.generation() != generation {
            return;
        }
        self.write(segments, &ends);
    }

    /// After a round that failed: keeps what arrived, on disk and on
    /// record, for the next run, or leaves nothing behind when nothing
    /// arrived. Returns how many bytes are kept.
    async fn keep_or_discard(&self, part: &Path, segments: &[Segment]) -> Result<u64, FileError> {
        let have: u64 = segments.iter().map(|s| s.done - s.start).sum();
        if have > 0 {
            self.save_final(segments).await;
        } else {
            remove(part).map_err(local(part))?;
            remove(&self.path).map_err(local(&self.path))?;
        }
        Ok(have)
    }

    /// After the streams stopped: everything handed to the writer is
    /// written.
    async fn save_final(&self, segments: &[Segment]) {
        let ends: Vec<u64> = segments.iter().map(|s| s.done).collect();
        let file = Arc::clone(&self.file);
        if blocking(move || file.sync_data()).await.is_ok() {
            self.write(segments, &ends);
        }
    }

    fn write(&self, segments: &[Segment], ends: &[u64]) {
        let mut record = self.base.clone();
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        record.size = record.size.or(learned.total);
        record.validator = learned
            .validator
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        record.segments = segments
            .iter()
            .zip(ends)
            .map(|(s, end)| Segment {
                start: s.start,
                end: s.end.or(learned.total),
                done: (*end).max(s.start),
            })
            .collect();
        drop(learned);
        if let Err(e) = record.save(&self.path) {
            tracing::debug!("cannot record progress in {}: {e}", self.path.display());
        }
    }
}

/// What a HEAD request says about a URL.
#[derive(Default)]
pub(crate) struct Probe {
    size: Option<u64>,
    ranges: bool,
    /// 304 to the conditions sent: the file has not changed.
    not_modified: bool,
}

/// One HEAD with `conditions`, not retried: a server that does not answer
/// it is simply downloaded without knowing the size in advance, and a file
/// it does not prove current is fetched again.
async fn probe_head(job: &Job<'_>, conditions: &[(HeaderName, HeaderValue)]) -> Probe {
    let item = &job.planned.item;
    let Ok(prepared) = request(job.client, Method::HEAD, item).prepare() else {
        return Probe::default();
    };
    let mut extra = conditions.to_vec();
    if let Some(authorizer) = &item.authorizer {
        match crate::stream::authorization(authorizer).await {
            Ok(header) => extra.extend(header),
            Err(_) => return Probe::default(),
        }
    }
    let _permit = job.options.connections.acquire(prepared.url()).await;
    let resp = match prepared.send_once(&extra).await {
        Ok(resp) => resp,
        Err(backstop_http::HttpFailure::Status { status, .. })
            if status == StatusCode::NOT_MODIFIED && !conditions.is_empty() =>
        {
            return Probe {
                not_modified: true,
                ..Probe::default()
            };
        }
        Err(_) => return Probe::default(),
    };
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    Probe {
        size: header(CONTENT_LENGTH).and_then(|v| v.trim().parse().ok()),
        ranges: header(ACCEPT_RANGES).is_some_and(|v| v.trim().eq_ignore_ascii_case("bytes")),
        not_modified: false,
    }
}

/// Whether the file at `path` has the digest expected.
async fn digest_matches(path: &Path, expected: Sha256) -> bool {
    let path = path.to_owned();
    blocking(move || {
        let file = File::open(&path)?;
        let len = file.metadata()?.len();
        Hashed::default().finish(&file, len)
    })
    .await
    .is_ok_and(|actual| actual == expected)
}

/// How a file of `total` bytes is split between streams.
fn plan(total: Option<u64>, options: &Options, ranges_ok: bool) -> Vec<Segment> {
    let min = options.min_stream_bytes.max(1);
    match total {
        Some(t) if options.streams > 1 && ranges_ok && t >= 2 * min => {
            let n = (options.streams as u64).min(t / min).max(1);
            let share = t / n;
            (0..n)
                .map(|i| {
                    let start = i * share;
                    let end = if i + 1 == n { t } else { start + share };
                    Segment {
                        start,
                        end: Some(end),
                        done: start,
                    }
                })
                .collect()
        }
        _ => vec![Segment {
            start: 0,
            end: total,
            done: 0,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let options = Options {
            streams: 4,
            min_stream_bytes: 10,
            ..Options::default()
        };
        let ends = |t, ok| {
            plan(Some(t), &options, ok)
                .iter()
                .map(|s| (s.start, s.end.unwrap_or(0)))
                .collect::<Vec<_>>()
        };
        assert_eq!(ends(100, true), [(0, 25), (25, 50), (50, 75), (75, 100)]);
        assert_eq!(
            ends(30, true),
            [(0, 10), (10, 20), (20, 30)],
            "no share under the minimum"
        );
        assert_eq!(ends(19, true), [(0, 19)]);
        assert_eq!(ends(100, false), [(0, 100)], "no ranges, one stream");
        assert_eq!(plan(None, &options, true).len(), 1);
    }
}
