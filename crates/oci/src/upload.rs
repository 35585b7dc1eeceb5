//! Pushing one blob: skip it when the registry has it, mount it from
//! another repository, else upload it — in one `PUT` when it fits one
//! chunk, in `PATCH` chunks otherwise, in one streamed `PUT` when the
//! registry refuses chunks — checking every `Range` the registry answers,
//! continuing a broken session from the offset it holds, within a run and
//! across runs.
//!
//! Headway is the transfer crate's ([`Headway`]), as for a pull: a
//! connection cut after it moved [`RESUME_AT_ONCE`](backstop_transfer::RESUME_AT_ONCE)
//! goes again at once (its session asked where it stands, or a new one
//! started), one cut before waits one first backoff; the attempt count
//! starts again once the registry confirmed the minimum-progress bytes
//! beyond what it ever held in this run; and a blob that moves less than
//! the minimum progress in its window fails its attempt as too slow. A
//! run that goes round without ever getting further (a registry that
//! loses every session at the same point) ends at the attempt ceiling,
//! the runaway guard.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backstop_core::{Classified, Policy, RetryError, RetryEvent};
use backstop_http::{FileBody, HttpFailure, Method, Payload, StatusCode};
use backstop_transfer::{Event, Headway, MinProgress, Sha256, real_progress, resume_delay};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::registry::{Answer, Call, Registry};
use crate::{Fault, PushProgress, SessionRecord, SessionStore};

/// The chunk size when none is given: large enough that the per-request
/// cost vanishes on loopback (docker-registry 2.8 takes 16 MiB chunks as
/// fast as 64 MiB ones), small enough that a chunk cut on the way costs
/// little.
pub const DEFAULT_CHUNK_SIZE: u64 = 16 << 20;

/// How often the minimum-progress window is looked at while a chunk is on
/// its way.
const HEADWAY_TICK: Duration = Duration::from_secs(1);

/// Where a blob's bytes are.
#[derive(Clone, Debug)]
pub enum Content {
    /// A file on disk.
    File(PathBuf),
    /// Bytes in memory (the config).
    Memory(Bytes),
}

/// A blob to push.
#[derive(Clone, Debug)]
pub struct Blob {
    /// What progress and the summary call it (the file's path).
    pub name: String,
    /// Its sha256.
    pub digest: Sha256,
    /// Its size.
    pub size: u64,
    /// Its bytes.
    pub content: Content,
}

impl Blob {
    fn digest_text(&self) -> String {
        format!("sha256:{}", self.digest)
    }

    /// Bytes `offset..offset + len` as a request body: a file's are read
    /// as the connection takes them, never held whole.
    fn part(&self, offset: u64, len: u64) -> Part {
        match &self.content {
            Content::Memory(b) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = usize::try_from(offset + len)
                    .unwrap_or(usize::MAX)
                    .min(b.len());
                Part {
                    payload: Payload::Bytes(b.slice(start..end)),
                    file: None,
                }
            }
            Content::File(path) => {
                let file = FileBody::new(path, offset, len);
                Part {
                    payload: Payload::File(file.clone()),
                    file: Some(file),
                }
            }
        }
    }
}

/// A request body, and how much of it the connection took.
struct Part {
    payload: Payload,
    file: Option<FileBody>,
}

impl Part {
    fn len(&self) -> u64 {
        self.payload.len()
    }

    /// Bytes the connection took on the latest send (a body in memory,
    /// always small, counts once answered).
    fn taken(&self) -> u64 {
        self.file.as_ref().map_or(0, FileBody::taken)
    }
}

/// How a blob's push ended.
#[derive(Debug)]
pub enum BlobOutcome {
    /// Uploaded: `sent` bytes went out in this run, the first
    /// `resumed_from` were already held by the registry from an earlier
    /// one.
    Uploaded {
        /// Bytes sent in this run, resent ones included.
        sent: u64,
        /// Bytes the registry held from an earlier run.
        resumed_from: u64,
    },
    /// The registry already had it.
    AlreadyThere,
    /// Mounted from another repository of the registry.
    Mounted,
    /// Stopped between chunks; the session is recorded for the next run.
    Interrupted {
        /// Bytes the registry holds.
        offset: u64,
        /// Bytes sent in this run.
        sent: u64,
    },
    /// Did not get there.
    Failed(crate::Error),
}

impl BlobOutcome {
    /// Whether the registry has the blob.
    pub fn is_success(&self) -> bool {
        matches!(
            self,
            BlobOutcome::Uploaded { .. } | BlobOutcome::AlreadyThere | BlobOutcome::Mounted
        )
    }

    /// Bytes sent in this run.
    pub fn sent(&self) -> u64 {
        match self {
            BlobOutcome::Uploaded { sent, .. } | BlobOutcome::Interrupted { sent, .. } => *sent,
            _ => 0,
        }
    }
}

/// How blobs are uploaded.
#[derive(Clone, Debug)]
pub struct UploadOptions {
    /// Bytes per `PATCH`; a blob no larger goes in one `PUT`. Raised to
    /// the registry's `OCI-Chunk-Min-Length` when it asks for more.
    pub chunk_size: u64,
    /// A repository of the same registry to mount blobs from.
    pub mount_from: Option<String>,
    /// The retry policy of each blob (attempts, waits, attempt timeout).
    pub policy: Policy,
    /// Where unfinished sessions are recorded for the next run; none to
    /// keep them in memory only.
    pub sessions: Option<SessionStore>,
    /// The minimum-progress window of each blob (as a pull's, bytes the
    /// connection took, over however many sessions); `None` turns it off.
    pub min_progress: Option<MinProgress>,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            chunk_size: DEFAULT_CHUNK_SIZE,
            mount_from: None,
            policy: Policy::transfer(0),
            sessions: None,
            min_progress: Some(MinProgress::default()),
        }
    }
}

/// A live upload session.
#[derive(Clone, Debug)]
struct Session {
    location: Url,
    /// Bytes the registry confirmed.
    offset: u64,
    /// The registry's smallest chunk.
    min_chunk: u64,
}

/// What carries over from one attempt to the next.
#[derive(Default)]
struct State {
    session: Option<Session>,
    /// Whether the record of an earlier run was looked at.
    loaded: bool,
    mount_tried: bool,
    /// The largest offset the registry ever confirmed in this run.
    high_water: u64,
    /// `high_water` when the attempt count last started: once the
    /// registry confirms the minimum progress beyond it, the count starts
    /// again.
    count_from: u64,
    /// The offset the first session of this run started from.
    resumed_from: Option<u64>,
    started: bool,
    /// The largest chunk the registry takes, after it refused one (413).
    ceiling: Option<u64>,
    /// The chunk size after a chunk was torn on the way: smaller, so that
    /// the next cut costs less, and doubled back with each chunk that
    /// gets through.
    shrunk: Option<u64>,
    /// The registry refuses `PATCH`: the blob goes in one streamed `PUT`.
    whole: bool,
    headway: Headway,
}

/// The smallest chunk a 413 brings the size down to.
const MIN_CHUNK: u64 = 256 << 10;
/// The smallest chunk a torn one brings the size down to.
const MIN_TORN_CHUNK: u64 = 1 << 20;

enum Step {
    Done(BlobOutcome),
    /// The attempt moved the blob forward, then failed: start again at
    /// once with a fresh count of attempts.
    Again,
}

/// Pushes blobs into one repository.
pub struct Uploader<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The repository.
    pub repository: &'a str,
    /// The token scope.
    pub scope: &'a str,
    /// How.
    pub options: &'a UploadOptions,
    /// Told about bytes and retries; `index` is the blob's.
    pub progress: &'a dyn PushProgress,
    /// Stops between chunks.
    pub cancel: &'a CancellationToken,
}

impl Uploader<'_> {
    /// Pushes `blob` (number `index` for progress), retrying under the
    /// policy; the attempt count starts again whenever the registry
    /// confirms bytes it did not hold before.
    pub async fn push(&self, index: usize, blob: &Blob) -> BlobOutcome {
        let state = Mutex::new(State::default());
        let sent = AtomicU64::new(0);
        loop {
            let policy = &self.options.policy;
            {
                let mut st = lock(&state);
                st.count_from = st.high_water;
            }
            let result = policy
                .retry(|_| async {
                    let result = self.attempt(index, blob, &state, &sent).await;
                    if result.is_err() {
                        lock(&state).headway.restart();
                    }
                    result
                })
                .notify(|e: &RetryEvent<'_>| {
                    self.progress.event(
                        index,
                        Event::Retry {
                            attempt: e.attempt,
                            max_attempts: e.max_attempts,
                            reason: e.reason,
                            delay: e.delay,
                            server_wait: e.server_wait,
                        },
                    );
                })
                .cancel_waits_on(self.cancel)
                .run()
                .await;
            match result {
                Ok(Step::Done(outcome)) => return outcome,
                Ok(Step::Again) => continue,
                Err(e) if e.ending == backstop_core::Ending::Cancelled => {
                    let offset = lock(&state).session.as_ref().map_or(0, |s| s.offset);
                    return BlobOutcome::Interrupted {
                        offset,
                        sent: sent.load(Ordering::Relaxed),
                    };
                }
                Err(e) => return BlobOutcome::Failed(self.error(e)),
            }
        }
    }

    fn error(&self, source: RetryError<Fault>) -> crate::Error {
        crate::Error::Registry {
            host: self.registry.host().to_owned(),
            source: Box::new(source),
        }
    }

    fn blob_url(&self, blob: &Blob) -> Result<Url, Fault> {
        self.registry.url(&format!(
            "v2/{}/blobs/{}",
            self.repository,
            blob.digest_text()
        ))
    }

    /// Whether the registry has the blob (`HEAD`).
    async fn exists(&self, blob: &Blob) -> Result<bool, Fault> {
        let answer = self
            .registry
            .send(self.call(Method::HEAD, self.blob_url(blob)?, None, Vec::new()))
            .await?;
        match answer.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(answer.refusal().await),
        }
    }

    fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Payload>,
        headers: Vec<(&'static str, String)>,
    ) -> Call<'_> {
        Call {
            method,
            url,
            scope: self.scope,
            body,
            headers,
        }
    }

    fn record(&self, blob: &Blob, session: &Session) {
        let Some(store) = &self.options.sessions else {
            return;
        };
        let record = SessionRecord {
            registry: self.registry.host().to_owned(),
            repository: self.repository.to_owned(),
            digest: blob.digest_text(),
            location: session.location.to_string(),
            offset: session.offset,
        };
        if let Err(e) = store.save(&record) {
            tracing::warn!(
                "cannot record the upload of {} for the next run: {e}",
                blob.name
            );
        }
    }

    fn forget(&self, blob: &Blob) {
        if let Some(store) = &self.options.sessions {
            store.forget(self.registry.host(), self.repository, &blob.digest_text());
        }
    }

    fn finished(&self, state: &Mutex<State>, sent: &AtomicU64) -> BlobOutcome {
        let sent = sent.load(Ordering::Relaxed);
        let resumed_from = lock(state).resumed_from.unwrap_or(0);
        if sent == 0 && resumed_from == 0 {
            BlobOutcome::AlreadyThere
        } else {
            BlobOutcome::Uploaded { sent, resumed_from }
        }
    }

    /// One attempt: sessions, one after another, until the blob is
    /// there, the attempt fails, or it broke after real progress. A cut
    /// after the connections moved bytes goes again within the attempt (at
    /// once from [`RESUME_AT_ONCE`](backstop_transfer::RESUME_AT_ONCE)); one
    /// that moved nothing fails it.
    async fn attempt(
        &self,
        index: usize,
        blob: &Blob,
        state: &Mutex<State>,
        sent: &AtomicU64,
    ) -> Result<Step, Fault> {
        lock(state).headway.begin();
        loop {
            // A closing PUT whose answer was lost may have stored the
            // blob: ask before sending anything again.
            if self.exists(blob).await? {
                self.forget(blob);
                if !lock(state).started {
                    self.start(index, blob, state, blob.size);
                }
                return Ok(Step::Done(self.finished(state, sent)));
            }
            let session = match self.session(index, blob, state).await? {
                Ok(s) => s,
                Err(outcome) => return Ok(Step::Done(outcome)),
            };
            let mut moved = 0;
            let fault = match self
                .send(index, blob, session, state, sent, &mut moved)
                .await
            {
                Ok(step) => return Ok(step),
                Err(fault) => fault,
            };
            if moved == 0
                || matches!(fault, Fault::TooSlow(_))
                || !fault.verdict().class.is_retryable()
                || self.cancel.is_cancelled()
            {
                return Err(fault);
            }
            let reason = fault.verdict().reason;
            let (at, progressed) = {
                let st = lock(state);
                let progressed = st.high_water.saturating_sub(st.count_from)
                    >= real_progress(self.options.min_progress);
                (st.session.as_ref().map_or(0, |s| s.offset), progressed)
            };
            let delay = if progressed {
                std::time::Duration::ZERO
            } else {
                if let Some(min) = self.options.min_progress {
                    lock(state).headway.count(min, 0).map_err(Fault::TooSlow)?;
                }
                resume_delay(moved, &self.options.policy)
            };
            self.progress.event(
                index,
                Event::Resume {
                    at,
                    reason: &reason,
                    delay,
                },
            );
            if progressed {
                return Ok(Step::Again);
            }
            if !delay.is_zero() {
                tokio::select! {
                    () = self.cancel.cancelled() => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }

    fn start(&self, index: usize, blob: &Blob, state: &Mutex<State>, have: u64) {
        let mut st = lock(state);
        if !st.started {
            st.started = true;
            drop(st);
            self.progress.event(
                index,
                Event::Start {
                    name: &blob.name,
                    size: Some(blob.size),
                    have,
                },
            );
        }
    }

    /// The session to continue: the one held (asking the registry where
    /// it stands), the one an earlier run recorded, or a new one. `Err`
    /// inside when the blob was mounted instead.
    async fn session(
        &self,
        index: usize,
        blob: &Blob,
        state: &Mutex<State>,
    ) -> Result<Result<Session, BlobOutcome>, Fault> {
        // The record of an earlier run becomes the session held, so that
        // a failed first look at it is retried, not forgotten.
        let known = {
            let mut st = lock(state);
            if !st.loaded {
                st.loaded = true;
                let recorded = self.options.sessions.as_ref().and_then(|s| {
                    s.load(self.registry.host(), self.repository, &blob.digest_text())
                });
                st.session = recorded.and_then(|r| {
                    Some(Session {
                        location: Url::parse(&r.location).ok()?,
                        offset: r.offset,
                        min_chunk: 0,
                    })
                });
            }
            st.session.clone()
        };
        if let Some(known) = known {
            if let Some(session) = self.status(&known).await? {
                let mut st = lock(state);
                st.resumed_from.get_or_insert(session.offset);
                st.session = Some(session.clone());
                drop(st);
                self.start(index, blob, state, session.offset);
                return Ok(Ok(session));
            }
            // Gone: expired, or broken by a torn chunk.
            let had = known.offset;
            lock(state).session = None;
            self.forget(blob);
            if had > 0 && lock(state).started {
                self.progress.event(
                    index,
                    Event::Restart {
                        reason: "the registry lost the upload session",
                    },
                );
            }
        }
        let mount = {
            let mut st = lock(state);
            let m = self
                .options
                .mount_from
                .as_deref()
                .filter(|_| !st.mount_tried);
            st.mount_tried = true;
            m
        };
        let mut url = self
            .registry
            .url(&format!("v2/{}/blobs/uploads/", self.repository))?;
        if let Some(from) = mount {
            url.query_pairs_mut()
                .append_pair("mount", &blob.digest_text())
                .append_pair("from", from);
        }
        let answer = self
            .registry
            .send(self.call(Method::POST, url.clone(), None, Vec::new()))
            .await?;
        let status = answer.status();
        if status == StatusCode::CREATED && mount.is_some() {
            self.start(index, blob, state, blob.size);
            return Ok(Err(BlobOutcome::Mounted));
        }
        if status != StatusCode::ACCEPTED {
            return Err(answer.refusal().await);
        }
        let location = location(&url, answer.header("location"))?;
        let min_chunk = answer
            .header("oci-chunk-min-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let session = Session {
            location,
            offset: 0,
            min_chunk,
        };
        let mut st = lock(state);
        st.resumed_from.get_or_insert(0);
        st.session = Some(session.clone());
        drop(st);
        self.record(blob, &session);
        self.start(index, blob, state, 0);
        Ok(Ok(session))
    }

    /// Where `known` stands (`GET` on its location); `None` when the
    /// registry no longer has it.
    async fn status(&self, known: &Session) -> Result<Option<Session>, Fault> {
        let answer = self
            .registry
            .send(self.call(Method::GET, known.location.clone(), None, Vec::new()))
            .await?;
        match answer.status() {
            s if s.is_success() => {
                let location = location(&known.location, answer.header("location"))?;
                // distribution writes "0-0" for both 0 and 1 byte held.
                let offset = match answer.header("range").and_then(range_end) {
                    Some(0) => known.offset.min(1),
                    Some(end) => end + 1,
                    None => 0,
                };
                Ok(Some(Session {
                    location,
                    offset,
                    min_chunk: known.min_chunk,
                }))
            }
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Ok(None),
            _ => Err(answer.refusal().await),
        }
    }

    /// Sends the rest of the blob on `session`, adding to `moved` the
    /// bytes the registry confirmed and those a connection took before it
    /// broke on the way.
    async fn send(
        &self,
        index: usize,
        blob: &Blob,
        mut session: Session,
        state: &Mutex<State>,
        sent: &AtomicU64,
        moved: &mut u64,
    ) -> Result<Step, Fault> {
        let chunk_size = || {
            let st = lock(state);
            st.shrunk
                .unwrap_or(self.options.chunk_size)
                .min(st.ceiling.unwrap_or(u64::MAX))
                .max(session.min_chunk)
                .max(1)
        };
        // A 413 halves the chunk for the next attempt, down to a floor.
        let too_large = |len: u64| {
            let smaller = (len / 2).max(MIN_CHUNK).max(session.min_chunk);
            if smaller < len {
                let mut st = lock(state);
                st.ceiling = Some(smaller);
                st.shrunk = st.shrunk.map(|s| s.min(smaller));
                Some(Fault::ChunkTooLarge(len))
            } else {
                None
            }
        };
        if session.offset > blob.size {
            lock(state).session = None;
            self.forget(blob);
            return Err(Fault::SessionGone(format!(
                "the registry holds {} bytes of a {}-byte blob",
                session.offset, blob.size
            )));
        }
        let whole = lock(state).whole;
        if session.offset == 0 && (whole || blob.size <= chunk_size()) {
            return self
                .send_whole(index, blob, &session, state, sent, moved)
                .await
                .map_err(|fault| match fault {
                    Fault::Http(f) if is_413(&f) && !whole => {
                        too_large(blob.size).unwrap_or(Fault::Http(f))
                    }
                    fault => fault,
                });
        }
        while session.offset < blob.size {
            if self.cancel.is_cancelled() {
                self.record(blob, &session);
                return Ok(Step::Done(BlobOutcome::Interrupted {
                    offset: session.offset,
                    sent: sent.load(Ordering::Relaxed),
                }));
            }
            let start = session.offset;
            let len = chunk_size().min(blob.size - start);
            let part = blob.part(start, len);
            sent.fetch_add(len, Ordering::Relaxed);
            let headers = vec![
                ("content-type", "application/octet-stream".to_owned()),
                ("content-range", format!("{start}-{}", start + len - 1)),
            ];
            let call = self.call(
                Method::PATCH,
                session.location.clone(),
                Some(part.payload.clone()),
                headers,
            );
            let answer = match self.watched(call, &part, state).await {
                Ok(answer) => answer,
                Err(fault) => {
                    if broke_on_the_way(&fault) && part.taken() > 0 {
                        *moved += part.taken();
                        // Torn on the way: smaller chunks while the link
                        // is bad, so that the next cut costs less.
                        lock(state).shrunk = Some((len / 4).max(MIN_TORN_CHUNK).min(len));
                    }
                    return Err(fault);
                }
            };
            match answer.status() {
                StatusCode::ACCEPTED => {}
                // A registry (or the proxy before it) that takes no
                // chunks: the blob goes in one PUT, on this session when
                // nothing was sent on it yet.
                status if start == 0 && refuses_chunks(status) => {
                    let refusal = answer.refusal().await;
                    if status != StatusCode::BAD_REQUEST
                        || !refusal.to_string().contains("BLOB_UPLOAD")
                    {
                        tracing::debug!(
                            "{}: PATCH refused ({refusal}); one PUT instead",
                            self.registry.host()
                        );
                        lock(state).whole = true;
                        return self
                            .send_whole(index, blob, &session, state, sent, moved)
                            .await;
                    }
                    return Err(refusal);
                }
                StatusCode::NOT_FOUND => {
                    lock(state).session = None;
                    self.forget(blob);
                    return Err(Fault::SessionGone(answer.refusal().await.to_string()));
                }
                // Out of order: ask where the session stands next time.
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    return Err(Fault::SessionGone("HTTP 416".to_owned()));
                }
                StatusCode::PAYLOAD_TOO_LARGE => {
                    if let Some(fault) = too_large(len) {
                        return Err(fault);
                    }
                    return Err(answer.refusal().await);
                }
                _ => return Err(answer.refusal().await),
            }
            let next = location(&session.location, answer.header("location"))?;
            let end = answer.header("range").and_then(range_end);
            // distribution 2.8 appends whatever comes, whatever the
            // Content-Range said: only its Range tells what it holds.
            if end != Some(start + len - 1) {
                lock(state).session = None;
                self.forget(blob);
                return Err(Fault::SessionGone(format!(
                    "after bytes {start}-{} the registry answered Range {}",
                    start + len - 1,
                    answer.header("range").unwrap_or("(none)")
                )));
            }
            session.location = next;
            session.offset = start + len;
            *moved += len;
            self.progress.advance(index, len);
            let mut st = lock(state);
            st.high_water = st.high_water.max(session.offset);
            st.session = Some(session.clone());
            // Through: back towards the full chunk size.
            st.shrunk = st
                .shrunk
                .map(|s| s.saturating_mul(2))
                .filter(|s| *s < self.options.chunk_size);
            drop(st);
            self.record(blob, &session);
        }
        self.close(blob, &session, None, state).await?;
        Ok(Step::Done(self.finished(state, sent)))
    }

    /// The whole blob in the closing `PUT` of `session` (at offset 0),
    /// streamed from the file.
    async fn send_whole(
        &self,
        index: usize,
        blob: &Blob,
        session: &Session,
        state: &Mutex<State>,
        sent: &AtomicU64,
        moved: &mut u64,
    ) -> Result<Step, Fault> {
        let part = blob.part(0, blob.size);
        sent.fetch_add(blob.size, Ordering::Relaxed);
        if let Err(fault) = self.close(blob, session, Some(&part), state).await {
            if broke_on_the_way(&fault) {
                *moved += part.taken();
            }
            return Err(fault);
        }
        *moved += blob.size;
        self.progress.advance(index, blob.size);
        let mut st = lock(state);
        st.high_water = blob.size;
        drop(st);
        Ok(Step::Done(self.finished(state, sent)))
    }

    /// Sends `call`, whose body is `part`, while the minimum-progress
    /// window counts the bytes the connection takes: a chunk on a link
    /// too slow fails as [`Fault::TooSlow`] without waiting for its end.
    async fn watched<'s>(
        &'s self,
        call: Call<'s>,
        part: &Part,
        state: &Mutex<State>,
    ) -> Result<Answer<'s>, Fault> {
        let Some(min) = self.options.min_progress else {
            return self.registry.send(call).await;
        };
        let count = |counted: &mut u64, taken: u64| {
            // A body sent again (after a token refresh) counts from 0.
            let new = taken.checked_sub(*counted).unwrap_or(taken);
            *counted = taken;
            lock(state).headway.count(min, new).map_err(Fault::TooSlow)
        };
        let send = self.registry.send(call);
        tokio::pin!(send);
        let mut counted = 0;
        let mut tick = tokio::time::interval(HEADWAY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                answer = &mut send => {
                    let taken = if answer.is_ok() { part.len() } else { part.taken() };
                    count(&mut counted, taken)?;
                    return answer;
                }
                _ = tick.tick() => count(&mut counted, part.taken())?,
            }
        }
    }

    /// The closing `PUT …?digest=`, with the last bytes if any.
    async fn close(
        &self,
        blob: &Blob,
        session: &Session,
        body: Option<&Part>,
        state: &Mutex<State>,
    ) -> Result<(), Fault> {
        let mut url = session.location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &blob.digest_text());
        let payload = body.map_or(Payload::Bytes(Bytes::new()), |p| p.payload.clone());
        let call = self.call(
            Method::PUT,
            url,
            Some(payload),
            vec![("content-type", "application/octet-stream".to_owned())],
        );
        let answer = match body {
            Some(part) => self.watched(call, part, state).await?,
            None => self.registry.send(call).await?,
        };
        let status = answer.status();
        if status.is_success() {
            lock(state).session = None;
            self.forget(blob);
            return Ok(());
        }
        let fault = answer.refusal().await;
        if status == StatusCode::BAD_REQUEST && fault.to_string().contains("DIGEST_INVALID") {
            lock(state).session = None;
            self.forget(blob);
            return Err(Fault::DigestRefused(fault.to_string()));
        }
        if status == StatusCode::NOT_FOUND {
            // A replayed PUT after a lost answer gets 404 although the
            // blob is stored; the next attempt's HEAD tells.
            lock(state).session = None;
            self.forget(blob);
            return Err(Fault::SessionGone(fault.to_string()));
        }
        Err(fault)
    }
}

fn is_413(failure: &HttpFailure) -> bool {
    matches!(failure, HttpFailure::Status { status, .. } if *status == StatusCode::PAYLOAD_TOO_LARGE)
}

/// Whether the request broke on the way (cut, stalled, or its answer never
/// came), rather than being answered: the bytes the connection took moved.
fn broke_on_the_way(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Http(
            HttpFailure::Transport(_)
                | HttpFailure::UploadStalled(_)
                | HttpFailure::HeaderTimeout(_)
        )
    )
}

/// Whether a `PATCH` answered with `status` says that chunks are not
/// taken at all (a 400 only when it is not about the session).
fn refuses_chunks(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED | StatusCode::BAD_REQUEST
    )
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `Location` resolved against the URL it answers.
fn location(base: &Url, header: Option<&str>) -> Result<Url, Fault> {
    let header =
        header.ok_or_else(|| Fault::Protocol("an upload answer without a Location".to_owned()))?;
    base.join(header.trim()).map_err(|e| {
        // A Location may carry a signature in its query: never shown.
        let shown: String = header
            .split('?')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        Fault::Protocol(format!("the Location {shown:?}: {e}"))
    })
}

/// The end of `0-<end>` (a `bytes=` prefix tolerated).
fn range_end(value: &str) -> Option<u64> {
    let value = value.trim();
    let value = value.strip_prefix("bytes=").unwrap_or(value);
    let (start, end) = value.split_once('-')?;
    if start.trim() != "0" {
        return None;
    }
    end.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_registries_write_them() {
        assert_eq!(range_end("0-1023"), Some(1023));
        assert_eq!(range_end("bytes=0-0"), Some(0));
        assert_eq!(range_end("5-9"), None, "an upload always starts at 0");
        assert_eq!(range_end("0-"), None);
        assert_eq!(range_end("junk"), None);
    }

    #[test]
    fn locations_keep_their_query_and_may_change_host() {
        let base = Url::parse("http://r:5000/v2/m/blobs/uploads/").unwrap();
        let rel = location(&base, Some("/v2/m/blobs/uploads/u1?_state=abc")).unwrap();
        assert_eq!(
            rel.as_str(),
            "http://r:5000/v2/m/blobs/uploads/u1?_state=abc"
        );
        let abs = location(&base, Some("https://s3.example/up?sig=1")).unwrap();
        assert_eq!(abs.host_str(), Some("s3.example"));
        assert!(matches!(location(&base, None), Err(Fault::Protocol(_))));
        match location(&base, Some("http://[bad/up?sig=s3cret")) {
            Err(Fault::Protocol(why)) => assert!(!why.contains("s3cret"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
