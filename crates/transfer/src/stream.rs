//! One Range stream: bytes `start..end` of a file, fetched under the retry
//! engine, resumed from the last byte handed to the writer whenever a
//! transfer breaks.
//!
//! A connection that breaks after moving bytes is not a failure to count:
//! the stream reconnects from where it stopped, at once when that
//! connection moved at least [`RESUME_AT_ONCE`], else after one first
//! backoff (jittered), so that a server which sends a few bytes and cuts
//! every connection is not hammered. The attempt count starts again only
//! after *real progress*: once the stream has moved the minimum-progress
//! window's bytes ([`MinProgress::bytes`](crate::MinProgress::bytes); [`RESUME_AT_ONCE`] when the
//! window is off) since it last started. Until then, reconnections belong
//! to the same attempt, and the window runs across them: a stream that
//! moves less than its minimum in the window, however many connections
//! that took, fails the attempt as [`TransferFailure::TooSlow`](crate::TransferFailure::TooSlow). Attempts that
//! fail (moving nothing, or too slow) are retried with growing backoff,
//! and only they can exhaust the policy.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backstop_core::{Classified, Policy, RetryError};
use backstop_http::header::{ETAG, HeaderName, HeaderValue, IF_RANGE, LAST_MODIFIED, RANGE};
use backstop_http::{Prepared, StatusCode};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::headway::{Headway, RESUME_AT_ONCE, real_progress, resume_delay};
use crate::response::{Answer, answer};
use crate::writer::{Pending, Writer};
use crate::{Event, Options, Progress, Sha256, TransferFailure};

/// How long gathered bytes may wait for more before they are written.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// What a file's streams learn from the server as they go.
#[derive(Debug, Default)]
pub(crate) struct Learned {
    /// The file's size, from a `Content-Range` or a `Content-Length`.
    pub total: Option<u64>,
    /// The `If-Range` validator: a strong ETag, else Last-Modified.
    pub validator: Option<HeaderValue>,
    /// The last answer's `ETag` (weak ones too) and `Last-Modified`, kept
    /// with the finished file to revalidate it later.
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
    /// The sha256 the server gives in `X-Linked-Etag`.
    pub linked: Option<Sha256>,
    /// The server cannot be trusted with Range: every attempt starts at 0.
    pub no_range: bool,
}

/// What the streams of one file share.
pub(crate) struct FileCtx<'a> {
    pub prepared: &'a Prepared<'a>,
    pub options: &'a Options,
    pub progress: &'a dyn Progress,
    pub id: usize,
    pub cancel: &'a CancellationToken,
    pub writer: &'a Writer,
    /// The size the listing gives: a server that disagrees is wrong.
    pub expected: Option<u64>,
    pub learned: &'a Mutex<Learned>,
    /// Bytes received from the network, kept or not.
    pub fetched: &'a AtomicU64,
    /// Several streams share the file: each must get exactly its range.
    pub bounded: bool,
    /// Where each request's `Authorization` comes from, when it changes.
    pub authorizer: Option<&'a crate::Authorizer>,
}

impl FileCtx<'_> {
    fn learned(&self) -> std::sync::MutexGuard<'_, Learned> {
        self.learned.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One stream's position.
pub(crate) struct Stream {
    pub index: usize,
    /// Exclusive; `None` until known.
    pub end: Option<u64>,
    /// The next byte to hand to the writer.
    pos: AtomicU64,
    /// The minimum-progress window: it spans reconnections, and starts
    /// again after the wait that follows a failed attempt.
    headway: Headway,
    /// Bytes moved since the attempt count last started.
    since_reset: AtomicU64,
}

impl Stream {
    pub(crate) fn new(index: usize, end: Option<u64>, pos: u64) -> Self {
        Stream {
            index,
            end,
            pos: AtomicU64::new(pos),
            headway: Headway::new(),
            since_reset: AtomicU64::new(0),
        }
    }

    /// The next byte to fetch.
    pub(crate) fn pos(&self) -> u64 {
        self.pos.load(Ordering::Acquire)
    }

    fn set_pos(&self, pos: u64) {
        self.pos.store(pos, Ordering::Release);
    }
}

/// How an attempt that did not fail ended.
enum Step {
    /// The stream has all its bytes.
    Done,
    /// The transfer broke after real progress: go again, with the attempt
    /// count started again.
    Again(Break),
}

/// Why a transfer that moved bytes broke off, and whether to reconnect at
/// once rather than after a pause.
struct Break {
    reason: Cow<'static, str>,
    at_once: bool,
}

/// How one connection that did not fail ended.
enum Connection {
    /// The stream has all its bytes.
    Done,
    /// Bytes moved, then the transfer ended early (or must start over):
    /// reconnect.
    Broke(Break),
}

/// Fetches the stream's bytes, retrying under the options' policy, until
/// it has them all or the engine gives up.
pub(crate) async fn run(
    ctx: &FileCtx<'_>,
    stream: &Stream,
) -> Result<(), RetryError<TransferFailure>> {
    loop {
        let left = stream
            .end
            .or(ctx.expected)
            .or(ctx.learned().total)
            .map(|end| end.saturating_sub(stream.pos()));
        let policy = ctx.options.policy_for(left);
        stream.since_reset.store(0, Ordering::Release);
        let result = policy
            .retry(|_| async {
                let step = attempt(ctx, stream, &policy).await;
                if step.is_err() {
                    stream.headway.restart();
                }
                step
            })
            .classify(|f| f.verdict())
            .notify(|e| {
                ctx.progress.event(
                    ctx.id,
                    Event::Retry {
                        attempt: e.attempt,
                        max_attempts: e.max_attempts,
                        reason: e.reason,
                        delay: e.delay,
                        server_wait: e.server_wait,
                    },
                );
            })
            .cancel_on(ctx.cancel)
            .run()
            .await?;
        match result {
            Step::Done => return Ok(()),
            Step::Again(broke) => reconnect(ctx, stream, &policy, &broke).await,
        }
    }
}

/// Says that the stream reconnects from where it stopped, and waits
/// first unless the break says at once.
async fn reconnect(ctx: &FileCtx<'_>, stream: &Stream, policy: &Policy, broke: &Break) {
    let Break { reason, at_once } = broke;
    let at_once = *at_once;
    let delay = if at_once {
        Duration::ZERO
    } else {
        resume_delay(0, policy)
    };
    tracing::debug!(
        file = ctx.id,
        at = stream.pos(),
        "{reason}; resuming in {}",
        backstop_core::HumanDuration(delay)
    );
    ctx.progress.event(
        ctx.id,
        Event::Resume {
            at: stream.pos(),
            reason,
            delay,
        },
    );
    if !delay.is_zero() {
        tokio::select! {
            () = ctx.cancel.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One attempt: connections, one after another, until the stream has its
/// bytes, an attempt fails, or it broke after real progress.
async fn attempt(
    ctx: &FileCtx<'_>,
    stream: &Stream,
    policy: &Policy,
) -> Result<Step, TransferFailure> {
    stream.headway.begin();
    loop {
        let broke = match connect(ctx, stream).await? {
            Connection::Done => return Ok(Step::Done),
            Connection::Broke(broke) => broke,
        };
        if stream.since_reset.load(Ordering::Acquire) >= real_progress(ctx.options.min_progress) {
            return Ok(Step::Again(broke));
        }
        if let Some(min) = ctx.options.min_progress {
            stream.headway.count(min, 0)?;
        }
        reconnect(ctx, stream, policy, &broke).await;
    }
}

/// Starts the stream over from byte 0 (one stream only): the partial file
/// is cut to nothing and its record forgotten.
async fn restart(ctx: &FileCtx<'_>, stream: &Stream, reason: &str) -> Result<(), TransferFailure> {
    ctx.writer.truncate(0).await?;
    stream.set_pos(0);
    ctx.progress.event(ctx.id, Event::Restart { reason });
    Ok(())
}

/// The `Authorization` header `authorizer` gives for the next request, as
/// a sensitive value (never logged).
pub(crate) async fn authorization(
    authorizer: &crate::Authorizer,
) -> Result<Option<(HeaderName, HeaderValue)>, TransferFailure> {
    let Some(value) = authorizer
        .authorization()
        .await
        .map_err(TransferFailure::Authorization)?
    else {
        return Ok(None);
    };
    let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
        TransferFailure::Authorization(
            "the credentials have characters a header cannot carry".into(),
        )
    })?;
    value.set_sensitive(true);
    Ok(Some((backstop_http::header::AUTHORIZATION, value)))
}

/// One request, and as much of its body as arrives.
async fn connect(ctx: &FileCtx<'_>, stream: &Stream) -> Result<Connection, TransferFailure> {
    let mut pos = stream.pos();
    let (no_range, validator, known_total) = {
        let l = ctx.learned();
        (l.no_range, l.validator.clone(), l.total)
    };
    if no_range && pos > 0 {
        restart(ctx, stream, "the server cannot resume; starting over").await?;
        pos = 0;
    }
    let mut extra: Vec<(HeaderName, HeaderValue)> = Vec::new();
    if !no_range && (pos > 0 || ctx.bounded) {
        let range = match stream.end {
            Some(end) => format!("bytes={pos}-{}", end.saturating_sub(1)),
            None => format!("bytes={pos}-"),
        };
        if let Ok(v) = HeaderValue::from_str(&range) {
            extra.push((RANGE, v));
        }
        if let Some(v) = validator {
            extra.push((IF_RANGE, v));
        }
    }
    let ranged = !extra.is_empty();
    if let Some(authorizer) = ctx.authorizer {
        extra.extend(authorization(authorizer).await?);
    }

    // Held until the body is read or given up: this request's connection
    // counts towards the host's bound until then.
    let permit = ctx.options.connections.acquire(ctx.prepared.url()).await;
    stream.headway.excuse(permit.waited());
    let resp = match ctx.prepared.send_once(&extra).await {
        Ok(resp) => resp,
        Err(backstop_http::HttpFailure::Status { status, .. })
            if status == StatusCode::RANGE_NOT_SATISFIABLE && ranged =>
        {
            let end = stream.end.or(ctx.expected).or(known_total);
            if end == Some(pos) {
                return Ok(Connection::Done);
            }
            if ctx.bounded {
                return Err(TransferFailure::RangeUnusable(
                    "HTTP 416 for a range of the file".into(),
                ));
            }
            restart(
                ctx,
                stream,
                "the server has fewer bytes than the partial file",
            )
            .await?;
            return Ok(starting_over("starting over"));
        }
        Err(e) => return Err(TransferFailure::Http(e)),
    };
    let answered = match answer(resp.status(), resp.headers()) {
        Ok(answered) => answered,
        Err(why) if ranged && resp.status() == StatusCode::PARTIAL_CONTENT => {
            return wrong_range(ctx, stream, why).await;
        }
        Err(why) => return Err(TransferFailure::Answer(why)),
    };
    learn(ctx, resp.headers());

    // Where this body's bytes go, and where they stop.
    let (at, limit) = match answered {
        Answer::Part { start, end, total } => {
            if !ranged {
                return Err(TransferFailure::Answer(
                    "a 206 for a request without Range".into(),
                ));
            }
            if start != pos || stream.end.is_some_and(|e| end >= e) {
                let why = format!("asked for bytes from {pos}, got {start}-{end}");
                return wrong_range(ctx, stream, why).await;
            }
            check_total(ctx, total)?;
            if let (Some(t), Some(known)) = (total, known_total)
                && t != known
            {
                // The file changed since the partial file was begun.
                if ctx.bounded {
                    return Err(TransferFailure::RangeUnusable(
                        "the file changed size".into(),
                    ));
                }
                ctx.learned().total = Some(t);
                restart(ctx, stream, "the file changed on the server").await?;
                return Ok(starting_over("starting over"));
            }
            (start, end + 1)
        }
        Answer::Whole { length } => {
            if ranged {
                if ctx.bounded {
                    return Err(TransferFailure::RangeUnusable(
                        "the server answered a Range request with the whole file".into(),
                    ));
                }
                // Range ignored, or If-Range saw a changed file: this
                // body is the whole file, so use it from byte 0.
                restart(
                    ctx,
                    stream,
                    "the server sent the whole file instead of the rest",
                )
                .await?;
            }
            check_total(ctx, length)?;
            (0, length.or(ctx.expected).unwrap_or(u64::MAX))
        }
    };
    if let Some(total) = answered.total() {
        let new = ctx.learned().total.replace(total) != Some(total);
        if new && ctx.expected.is_none() {
            ctx.progress.event(ctx.id, Event::Size(total));
        }
    }

    let received = receive(ctx, stream, resp, Span { at, limit }).await;
    drop(permit);
    received
}

/// Where a body's bytes go in the file: from `at`, stopping before
/// `limit` (`u64::MAX` when the end is not known).
#[derive(Clone, Copy)]
struct Span {
    at: u64,
    limit: u64,
}

/// Reads a body into the file at `span`, handing the bytes to the writer
/// as they come and after a moment of quiet, until it ends, breaks, or
/// the stream is too slow. A break after some bytes moved is a
/// [`Connection::Broke`] to resume from; one before, the attempt's failure.
async fn receive(
    ctx: &FileCtx<'_>,
    stream: &Stream,
    mut resp: backstop_http::Response,
    span: Span,
) -> Result<Connection, TransferFailure> {
    let Span { at, limit } = span;
    let mut pending = Pending::new(ctx.writer, stream.index, at);
    let mut here = at;
    let mut moved = 0u64;
    // Gathered bytes also go to the writer after a moment of quiet, so
    // that a stall or a Ctrl-C never strands them in memory.
    let quiet = tokio::time::sleep(FLUSH_AFTER);
    tokio::pin!(quiet);
    let mut armed = false;
    let broke = loop {
        let next = tokio::select! {
            biased;
            next = resp.chunk() => next,
            () = &mut quiet, if armed => {
                armed = false;
                stream.set_pos(pending.flush().await?);
                continue;
            }
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break None,
            Err(e) => {
                break Some(TransferFailure::Http(
                    backstop_http::HttpFailure::Transport(e.without_url()),
                ));
            }
        };
        ctx.fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        // Never past the range's end, whatever the server sends.
        let room = usize::try_from(limit - here).unwrap_or(usize::MAX);
        let take = chunk.len().min(room);
        if let Some(done) = pending.push(&chunk[..take]).await? {
            stream.set_pos(done);
            armed = false;
        }
        if !armed && !pending.is_empty() {
            quiet.as_mut().reset(Instant::now() + FLUSH_AFTER);
            armed = true;
        }
        here += take as u64;
        moved += take as u64;
        stream.since_reset.fetch_add(take as u64, Ordering::AcqRel);
        ctx.progress.advance(ctx.id, take as u64);
        if let Some(limit) = &ctx.options.limit {
            stream.headway.excuse(limit.take(chunk.len() as u64).await);
        }
        if take < chunk.len() {
            break None;
        }
        if let Some(min) = ctx.options.min_progress
            && let Err(slow) = stream.headway.count(min, take as u64)
        {
            break Some(slow);
        }
    };
    stream.set_pos(pending.flush().await?);

    if let Some(failure) = broke {
        let progressed = moved > 0 && !matches!(failure, TransferFailure::TooSlow { .. });
        if progressed && failure.verdict().class.is_retryable() {
            return Ok(Connection::Broke(Break {
                reason: failure.verdict().reason,
                at_once: moved >= RESUME_AT_ONCE,
            }));
        }
        return Err(failure);
    }
    // The body ended cleanly: complete, or the server sent less than the
    // rest (a short range, a body without a length cut between chunks).
    let goal = stream.end.or(ctx.expected).or(ctx.learned().total);
    let short = (limit != u64::MAX && here < limit) || goal.is_some_and(|g| here < g);
    match (short, moved > 0) {
        (false, _) => Ok(Connection::Done),
        (true, true) => Ok(Connection::Broke(Break {
            reason: "the server sent less than the rest".into(),
            at_once: moved >= RESUME_AT_ONCE,
        })),
        (true, false) => Err(TransferFailure::Short),
    }
}

/// An answer to a Range request that carries other bytes, or says so in a
/// `Content-Range` that cannot be read: a single stream starts over
/// without Range (the server cannot be trusted with it); several streams
/// fall back to one.
async fn wrong_range(
    ctx: &FileCtx<'_>,
    stream: &Stream,
    why: String,
) -> Result<Connection, TransferFailure> {
    if ctx.bounded {
        return Err(TransferFailure::RangeUnusable(why));
    }
    ctx.learned().no_range = true;
    restart(ctx, stream, &format!("wrong Content-Range ({why})")).await?;
    Ok(starting_over("starting over without Range"))
}

/// After a restart: reconnect at once, from byte 0.
fn starting_over(reason: &'static str) -> Connection {
    Connection::Broke(Break {
        reason: reason.into(),
        at_once: true,
    })
}

/// Fails when the server's size for the file is not the listing's.
fn check_total(ctx: &FileCtx<'_>, total: Option<u64>) -> Result<(), TransferFailure> {
    match (total, ctx.expected) {
        (Some(server), Some(expected)) if server != expected => {
            Err(TransferFailure::Size { server, expected })
        }
        _ => Ok(()),
    }
}

/// Keeps the validators for `If-Range` and for revalidating the finished
/// file, and the digest of `X-Linked-Etag`.
fn learn(ctx: &FileCtx<'_>, headers: &backstop_http::header::HeaderMap) {
    let mut l = ctx.learned();
    l.etag = headers.get(ETAG).cloned();
    l.last_modified = headers.get(LAST_MODIFIED).cloned();
    let strong = headers
        .get(ETAG)
        .filter(|v| !v.as_bytes().starts_with(b"W/") && !v.is_empty());
    if let Some(v) = strong.or_else(|| headers.get(LAST_MODIFIED)) {
        l.validator = Some(v.clone());
    }
    if let Some(d) = headers
        .get("x-linked-etag")
        .and_then(|v| v.to_str().ok())
        .and_then(Sha256::from_etag)
    {
        l.linked = Some(d);
    }
}
