//! One request, retried as a whole: sending it, checking the status and
//! reading the body are one attempt, so a body cut halfway is retried like
//! a refused connection.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use backstop_core::{Attempt, HumanDuration, Policy, RetryError, RetryEvent, Secret};
use bytes::{Bytes, BytesMut};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::failure::{body_wait, detail, says_quota};
use crate::hosts::Look;
use crate::{Client, Error, HostRefusal, HttpFailure, Payload, wait_headers};

/// Default limit of a body read into memory ([`RequestBuilder::bytes`],
/// [`RequestBuilder::json`]): 64 MiB. Larger payloads belong on disk.
pub const MAX_BODY: usize = 64 << 20;

/// How much of an error response's body is read for its message.
const ERROR_BODY_PREFIX: usize = 8 << 10;
/// How long reading that prefix may take.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers whose values are credentials: marked sensitive (reqwest keeps
/// them out of its debug output) and scrubbed from server messages. All
/// but the first and third are never carried across a redirect to another
/// origin (reqwest itself drops `Authorization` and `Cookie` there).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
];

/// The header that makes a POST or a PATCH safe to send again.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

type RetryHook<'c> = Box<dyn FnMut(&RetryEvent<'_>) + Send + 'c>;

/// A response read into memory.
#[derive(Clone, Debug)]
pub struct Body {
    /// The final status (after redirects).
    pub status: StatusCode,
    /// The final response's headers.
    pub headers: HeaderMap,
    /// The final URL (after redirects).
    pub url: Url,
    /// The body.
    pub bytes: Bytes,
}

impl Body {
    /// Parses the body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.bytes)
    }
}

/// A request being configured. Nothing is sent until one of
/// [`send`](RequestBuilder::send), [`bytes`](RequestBuilder::bytes) or
/// [`json`](RequestBuilder::json) is awaited, or it is
/// [`prepare`](RequestBuilder::prepare)d for a caller's own loop (a
/// download to disk, resumed by Range, as `backstop-transfer` runs it).
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder<'c> {
    client: &'c Client,
    method: Method,
    url: Result<Url, Error>,
    headers: HeaderMap,
    secrets: Vec<String>,
    /// Carries a credential reqwest would forward to another origin.
    pins_origin: bool,
    body: Option<Payload>,
    policy: Option<Policy>,
    idempotent: Option<bool>,
    cancel: Option<CancellationToken>,
    on_retry: Option<RetryHook<'c>>,
    max_body: usize,
    error: Option<Error>,
}

impl<'c> RequestBuilder<'c> {
    pub(crate) fn new(client: &'c Client, method: Method, url: &str) -> Self {
        RequestBuilder {
            client,
            method,
            url: parse_url(url),
            headers: HeaderMap::new(),
            secrets: Vec::new(),
            pins_origin: false,
            body: None,
            policy: None,
            idempotent: None,
            cancel: None,
            on_retry: None,
            max_body: MAX_BODY,
            error: None,
        }
    }

    /// Adds a header. Credentials (`Authorization`, `X-Api-Key`...) are
    /// marked sensitive and never shown. A malformed name or value makes the
    /// request fail before anything is sent, with a message that does not
    /// repeat the value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = match HeaderName::from_bytes(name.trim().as_bytes()) {
            Ok(n) => n,
            Err(_) => {
                self.error.get_or_insert(Error::InvalidHeader(format!(
                    "{name:?} is not a header name"
                )));
                return self;
            }
        };
        let mut value = match HeaderValue::from_str(value.trim()) {
            Ok(v) => v,
            Err(_) => {
                self.error.get_or_insert(Error::InvalidHeader(format!(
                    "the value of {name} has characters a header cannot carry"
                )));
                return self;
            }
        };
        if SECRET_HEADERS.contains(&name.as_str()) {
            value.set_sensitive(true);
            self.pins_origin |= !matches!(name.as_str(), "authorization" | "cookie");
            self.remember_secret(value.to_str().unwrap_or_default());
        }
        self.headers.append(name, value);
        self
    }

    /// Sends `Authorization: Bearer <token>`.
    pub fn bearer_auth(mut self, token: &Secret) -> Self {
        match HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
            Ok(mut value) => {
                value.set_sensitive(true);
                self.remember_secret(token.expose());
                self.headers.insert(AUTHORIZATION, value);
            }
            Err(_) => {
                self.error.get_or_insert(Error::InvalidHeader(format!(
                    "the token {token} has characters a header cannot carry"
                )));
            }
        }
        self
    }

    fn remember_secret(&mut self, value: &str) {
        let value = value.trim();
        self.secrets.push(value.to_owned());
        if let Some((_scheme, credential)) = value.split_once(' ') {
            self.secrets.push(credential.trim().to_owned());
        }
    }

    /// The request body, sent again on every attempt.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(Payload::Bytes(body.into()));
        self
    }

    /// The request body as bytes or as part of a file ([`FileBody`](crate::FileBody), read
    /// again on every attempt and never held in memory whole).
    pub fn payload(mut self, payload: impl Into<Payload>) -> Self {
        self.body = Some(payload.into());
        self
    }

    /// Uses this policy instead of the client's.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Whether the request may be repeated after the server may have acted
    /// on it. Defaults to the method's own semantics — GET, HEAD, OPTIONS,
    /// TRACE, PUT and DELETE are idempotent, POST and PATCH are not — and
    /// to idempotent for a request that carries an `Idempotency-Key`
    /// header (draft-ietf-httpapi-idempotency-key-header; Stripe's): the
    /// server makes it once, however often it is sent, and every retry
    /// carries the same key. A request that is not is retried only when
    /// the server cannot have acted on it ([`HttpFailure::not_acted`]).
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = Some(idempotent);
        self
    }

    /// Stops at once, mid-attempt or mid-wait, when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Calls `hook` before each wait between attempts.
    pub fn on_retry(mut self, hook: impl FnMut(&RetryEvent<'_>) + Send + 'c) -> Self {
        self.on_retry = Some(Box::new(hook));
        self
    }

    /// The largest body [`bytes`](RequestBuilder::bytes) and
    /// [`json`](RequestBuilder::json) accept (default [`MAX_BODY`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Retries until the status is a success and returns the response with
    /// its body unread. Reading that body is not retried; use the other
    /// methods when it should be.
    pub async fn send(self) -> Result<reqwest::Response, Error> {
        self.execute(|resp| async move { Ok(resp) }).await
    }

    /// Retries until the whole body has been read into memory.
    pub async fn bytes(self) -> Result<Body, Error> {
        let limit = self.max_body;
        self.execute(move |resp| read_limited(resp, limit)).await
    }

    /// Retries until the whole body has been read and parsed as JSON. A
    /// complete body that is not the JSON expected fails at once: asking
    /// again would get the same answer.
    pub async fn json<T: DeserializeOwned>(self) -> Result<T, Error> {
        let limit = self.max_body;
        self.execute(move |resp| async move {
            let body = read_limited(resp, limit).await?;
            body.json::<T>()
                .map_err(|e| HttpFailure::Invalid(format!("not the JSON expected: {e}")))
        })
        .await
    }

    /// Retries until the whole body has been written to `file`, which is
    /// emptied at the start of every attempt: a body cut short is fetched
    /// again whole (an answer to a POST cannot be resumed by Range), and
    /// what `file` holds in the end is one complete body. Never held in
    /// memory whole. A file that cannot be written fails at once
    /// ([`HttpFailure::Local`]).
    pub async fn save(self, file: &std::fs::File) -> Result<Saved, Error> {
        self.execute(|resp| write_body(resp, file)).await
    }

    /// Checks the request and freezes it, for callers that run their own
    /// retry loop and send it once per attempt ([`Prepared::send_once`]):
    /// a resumable download changes its `Range` header on every attempt.
    /// Fails, with nothing sent, on a malformed URL or header.
    pub fn prepare(self) -> Result<Prepared<'c>, Error> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let url = self.url?;
        Ok(Prepared {
            client: self.client,
            host: display_host(&url),
            url,
            method: self.method,
            headers: self.headers,
            secrets: self.secrets,
            pins_origin: self.pins_origin,
            body: self.body,
        })
    }

    /// Runs the request under the policy: `read` turns a successful
    /// response into the result, within the same attempt.
    async fn execute<T, R, Fut>(mut self, read: R) -> Result<T, Error>
    where
        R: Fn(reqwest::Response) -> Fut,
        Fut: Future<Output = Result<T, HttpFailure>>,
    {
        let idempotent = self.idempotent.unwrap_or_else(|| {
            is_idempotent(&self.method) || self.headers.contains_key(IDEMPOTENCY_KEY)
        });
        let client = self.client;
        let policy = self.policy.clone();
        let policy = policy.as_ref().unwrap_or(&client.policy);
        let cancel = self.cancel.clone();
        let mut hook = self.on_retry.take();
        let prepared = self.prepare()?;
        let read = &read;
        let prepared_ref = &prepared;

        let op = |_: Attempt| async move {
            let resp = prepared_ref.send_once(&[]).await?;
            read(resp).await
        };
        let host_ref = prepared.host();
        let notify = |event: &RetryEvent<'_>| {
            tracing::info!(
                host = host_ref,
                attempt = event.attempt,
                reason = event.reason,
                "{host_ref}: {}; retry {} of {} in {}",
                event.reason,
                event.attempt,
                event.max_attempts - 1,
                HumanDuration(event.delay),
            );
            if let Some(hook) = hook.as_mut() {
                hook(event);
            }
        };
        let result = policy
            .retry(op)
            .classify(|f| f.verdict_for(idempotent))
            .notify(notify)
            .budget(client.budget.as_ref())
            .cancel_on(cancel.as_ref())
            .run()
            .await;
        result.map_err(|source| prepared.call_error(source))
    }
}

/// A request checked and ready to be sent any number of times, one attempt
/// per [`send_once`](Prepared::send_once), by a caller that runs the retry
/// engine itself. Made by [`RequestBuilder::prepare`].
#[derive(Debug)]
pub struct Prepared<'c> {
    client: &'c Client,
    url: Url,
    host: String,
    method: Method,
    headers: HeaderMap,
    secrets: Vec<String>,
    pins_origin: bool,
    body: Option<Payload>,
}

impl Prepared<'_> {
    /// The URL asked for (before any redirect). Never show it as is: use
    /// [`redact_url`] or [`Prepared::host`].
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The host and non-default port, as messages show it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Sends the request once with `extra` headers added (a `Range`, an
    /// `If-Range`), waiting at most the client's header timeout for the
    /// response headers. A status that is not a success becomes
    /// [`HttpFailure::Status`] with the wait the server asked for and its
    /// message, scrubbed of the request's credentials. The body is left
    /// unread, for the caller to stream.
    pub async fn send_once(
        &self,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, HttpFailure> {
        let resp = self.send_any(extra).await?;
        if !resp.status().is_success() {
            return Err(self.failure(resp).await);
        }
        Ok(resp)
    }

    /// Sends the request once, as [`send_once`](Prepared::send_once), but
    /// returns the response whatever its status: for a protocol that reads
    /// the headers of a refusal (a registry's `WWW-Authenticate` challenge
    /// on a 401). Turn a refusal into its [`HttpFailure`] with
    /// [`Prepared::failure`].
    pub async fn send_any(
        &self,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, HttpFailure> {
        let look = self.client.hosts.before(&self.host).await?;
        let resp = self.transmit(extra).await?;
        self.heard(look, &resp).await;
        Ok(resp)
    }

    /// Tells the host board what the host answered: a success ends the
    /// cooldown it waited out, a 429, 503 or 529 whose headers ask for a
    /// wait starts one, and so does a success whose rate-limit headers say
    /// the quota is spent ([`spent_quota`](crate::spent_quota)): the next
    /// request would only be refused.
    async fn heard(&self, look: Look, resp: &reqwest::Response) {
        let status = resp.status();
        let hosts = &self.client.hosts;
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            hosts.answered(&self.host, look).await;
            if let Some(wait) = wait_headers::spent_quota(resp.headers(), SystemTime::now()) {
                let refusal = HostRefusal {
                    status: StatusCode::TOO_MANY_REQUESTS.as_u16(),
                    quota: true,
                    until: hosts.deadline(wait),
                    from_body: false,
                    message: format!("HTTP {}: the rate-limit quota is spent", status.as_u16()),
                };
                hosts.record(&self.host, refusal).await;
            }
        } else if asks_to_wait(status)
            && let Some(wait) = wait_headers::server_wait(resp.headers(), SystemTime::now())
        {
            let shown = HttpFailure::Status {
                status,
                wait: None,
                quota: false,
                detail: None,
            };
            hosts
                .refused(
                    &self.host,
                    status.as_u16(),
                    hosts.deadline(wait),
                    &shown.to_string(),
                )
                .await;
        }
    }

    /// Sends the request once, the host board left aside.
    async fn transmit(
        &self,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, HttpFailure> {
        let body = match &self.body {
            // Read whole, a small file body stays replayable on a
            // redirect, as a small body in memory does. (One that cannot
            // be read is streamed, and fails as the stream does.)
            Some(Payload::File(file)) if file.len() <= STREAMED_BODY as u64 => {
                match file.read_whole().await {
                    Ok(bytes) => Some(Payload::Bytes(bytes)),
                    Err(_) => self.body.clone(),
                }
            }
            body => body.clone(),
        };
        let streamed = match &body {
            Some(Payload::Bytes(b)) => b.len() > STREAMED_BODY,
            Some(Payload::File(_)) => true,
            None => false,
        };
        let transport = if self.pins_origin {
            &self.client.same_origin
        } else if streamed {
            &self.client.uploads
        } else {
            &self.client.inner
        };
        let mut headers = self.headers.clone();
        for (name, value) in extra {
            headers.insert(name.clone(), value.clone());
        }
        let mut request = transport
            .request(self.method.clone(), self.url.clone())
            .headers(headers);
        let header_timeout = self.client.header_timeout;
        let sent = match &body {
            // A large body may take longer than the header timeout to go
            // out: the timeout starts once it has all gone, and until then
            // only a server that takes none of it for the idle timeout
            // fails the attempt. (A streamed body is not sent again on a
            // 307 or 308: small ones stay replayable.)
            Some(body) if streamed => {
                let progress = Arc::new(BodyProgress::default());
                let stream: BodyStream = match body {
                    Payload::Bytes(bytes) => Box::pin(pieces(bytes.clone(), Arc::clone(&progress))),
                    Payload::File(file) => {
                        Box::pin(counted(file.pieces(), file.len(), Arc::clone(&progress)))
                    }
                };
                let request = request
                    .header(reqwest::header::CONTENT_LENGTH, body.len())
                    .body(reqwest::Body::wrap_stream(stream));
                let idle = self.client.read_idle_timeout;
                tokio::select! {
                    sent = request.send() => sent,
                    failure = progress.watch(idle, header_timeout) => return Err(failure),
                }
            }
            body => {
                if let Some(Payload::Bytes(body)) = body {
                    request = request.body(body.clone());
                }
                match tokio::time::timeout(header_timeout, request.send()).await {
                    Err(_) => return Err(HttpFailure::HeaderTimeout(header_timeout)),
                    Ok(sent) => sent,
                }
            }
        };
        sent.map_err(|e| HttpFailure::Transport(e.without_url()))
    }

    /// The failure a response that is not a success stands for, with the
    /// wait the server asked for and its message scrubbed of the request's
    /// credentials.
    ///
    /// A wait found only in the body (Google's `RetryInfo`) of a 429, 503
    /// or 529 cools the host as a header's does when the response arrives.
    pub async fn failure(&self, resp: reqwest::Response) -> HttpFailure {
        let in_headers = wait_headers::server_wait(resp.headers(), SystemTime::now()).is_some();
        let failure = status_failure(resp, &self.secrets).await;
        if let HttpFailure::Status {
            status,
            wait: Some(wait),
            quota,
            ..
        } = &failure
            && asks_to_wait(*status)
            && !in_headers
        {
            let hosts = &self.client.hosts;
            let refusal = HostRefusal {
                status: status.as_u16(),
                quota: *quota,
                until: hosts.deadline(*wait),
                from_body: true,
                message: failure.to_string(),
            };
            hosts.record(&self.host, refusal).await;
        }
        failure
    }

    /// The error for a retried call of this request that did not succeed.
    pub fn call_error(&self, source: RetryError<HttpFailure>) -> Error {
        Error::Call {
            host: self.host.clone(),
            source: Box::new(source),
        }
    }
}

/// How much of a request body has gone out, and when the last piece did.
#[derive(Default)]
struct BodyProgress {
    /// Pieces taken by the connection so far.
    taken: AtomicU64,
    /// Whether the last piece was taken.
    done: AtomicBool,
}

/// Bodies larger than this are streamed, watched for progress.
const STREAMED_BODY: usize = 1 << 20;

/// The size of the pieces a body is handed over in.
const BODY_PIECE: usize = 64 << 10;

impl BodyProgress {
    /// Resolves with the failure when the connection takes no piece for
    /// `idle`, or when no response headers come within `header` of the
    /// last piece.
    async fn watch(&self, idle: Duration, header: Duration) -> HttpFailure {
        let mut seen = self.taken.load(Ordering::Acquire);
        loop {
            if self.done.load(Ordering::Acquire) {
                tokio::time::sleep(header).await;
                return HttpFailure::HeaderTimeout(header);
            }
            tokio::time::sleep(idle).await;
            let now = self.taken.load(Ordering::Acquire);
            if now == seen && !self.done.load(Ordering::Acquire) {
                return HttpFailure::UploadStalled(idle);
            }
            seen = now;
        }
    }
}

type BodyStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// `stream` (`len` bytes in all), counted as the connection takes its
/// pieces.
fn counted(
    stream: impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    len: u64,
    progress: Arc<BodyProgress>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    use futures_util::StreamExt;
    let mut seen = 0u64;
    if len == 0 {
        progress.done.store(true, Ordering::Release);
    }
    stream.inspect(move |piece| {
        if let Ok(piece) = piece {
            seen += piece.len() as u64;
            progress.taken.fetch_add(1, Ordering::AcqRel);
            if seen >= len {
                progress.done.store(true, Ordering::Release);
            }
        }
    })
}

/// `body` as a stream of cheap slices, counted as the connection takes
/// them.
fn pieces(
    body: Bytes,
    progress: Arc<BodyProgress>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold(0usize, move |at| {
        let body = body.clone();
        let progress = Arc::clone(&progress);
        async move {
            if at >= body.len() {
                progress.done.store(true, Ordering::Release);
                return None;
            }
            let end = (at + BODY_PIECE).min(body.len());
            progress.taken.fetch_add(1, Ordering::AcqRel);
            if end == body.len() {
                progress.done.store(true, Ordering::Release);
            }
            Some((Ok(body.slice(at..end)), end))
        }
    })
}

fn parse_url(raw: &str) -> Result<Url, Error> {
    let shown = |url: &str| match Url::parse(url) {
        Ok(u) => redact_url(&u),
        Err(_) => url.chars().filter(|c| !c.is_control()).take(200).collect(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| Error::InvalidUrl {
        url: shown(raw),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::InvalidUrl {
            url: shown(raw),
            reason: format!("the scheme must be http or https, not {}", url.scheme()),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidUrl {
            url: shown(raw),
            reason: "no host".to_owned(),
        });
    }
    Ok(url)
}

/// A URL as it may be shown: no user name or password, no query (signed
/// URLs carry their signature there), no fragment.
pub fn redact_url(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The host and, when it is not the scheme's default, the port.
pub fn display_host(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The statuses whose wait holds every request to the host: a rate limit
/// and an overload.
fn asks_to_wait(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503 | 529)
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The failure of a response whose status is not a success, with the wait
/// it asks for and the server's message.
async fn status_failure(mut resp: reqwest::Response, secrets: &[String]) -> HttpFailure {
    let status = resp.status();
    if status.is_redirection() {
        // Only a redirect the client refused to follow gets here.
        let target = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| resp.url().join(l).ok())
            .map(|u| display_host(&u))
            .unwrap_or_else(|| "another host".to_owned());
        return HttpFailure::Status {
            status,
            wait: None,
            quota: false,
            detail: Some(format!(
                "redirect to {target} not followed: the request carries credentials for {}",
                display_host(resp.url())
            )),
        };
    }
    let mut wait = wait_headers::server_wait(resp.headers(), SystemTime::now());
    let prefix = tokio::time::timeout(ERROR_BODY_TIMEOUT, async {
        let mut buf = Vec::new();
        while buf.len() < ERROR_BODY_PREFIX {
            match resp.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                _ => break,
            }
        }
        buf
    })
    .await
    .unwrap_or_default();
    wait = wait.or_else(|| body_wait(&prefix));
    HttpFailure::Status {
        status,
        wait,
        quota: says_quota(&prefix),
        detail: detail(&prefix, secrets),
    }
}

/// A response whose body went to a file ([`RequestBuilder::save`]).
#[derive(Clone, Debug)]
pub struct Saved {
    /// The final status (after redirects).
    pub status: StatusCode,
    /// The final response's headers.
    pub headers: HeaderMap,
    /// The final URL (after redirects).
    pub url: Url,
    /// The body's length.
    pub len: u64,
}

/// Writes a body to `file` from its start, cutting what an earlier
/// attempt left.
async fn write_body(
    mut resp: reqwest::Response,
    file: &std::fs::File,
) -> Result<Saved, HttpFailure> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let local = HttpFailure::Local;
    let mut out = tokio::fs::File::from_std(file.try_clone().map_err(local)?);
    out.set_len(0).await.map_err(local)?;
    out.seek(std::io::SeekFrom::Start(0)).await.map_err(local)?;
    let (status, headers, url) = (resp.status(), resp.headers().clone(), resp.url().clone());
    let mut len = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HttpFailure::Transport(e.without_url()))?
    {
        out.write_all(&chunk).await.map_err(local)?;
        len += chunk.len() as u64;
    }
    out.flush().await.map_err(local)?;
    Ok(Saved {
        status,
        headers,
        url,
        len,
    })
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Body, HttpFailure> {
    let too_large = |n: u64| {
        HttpFailure::Invalid(format!(
            "the body ({n} bytes) is larger than the {limit}-byte limit"
        ))
    };
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(too_large(len));
    }
    let status = resp.status();
    let headers = resp.headers().clone();
    let url = resp.url().clone();
    let capacity = resp.content_length().unwrap_or(0).min(limit as u64) as usize;
    let mut buf = BytesMut::with_capacity(capacity);
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| HttpFailure::Transport(e.without_url()))?
    {
        if buf.len() + chunk.len() > limit {
            return Err(too_large((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Body {
        status,
        headers,
        url,
        bytes: buf.freeze(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_sending() {
        assert!(parse_url("https://huggingface.co/api/models").is_ok());
        for bad in [
            "",
            "huggingface.co",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "http://",
        ] {
            assert!(
                matches!(parse_url(bad), Err(Error::InvalidUrl { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        let url =
            Url::parse("https://user:pa55@cdn.example.com/file?X-Amz-Signature=abc#f").unwrap();
        assert_eq!(redact_url(&url), "https://cdn.example.com/file");
        let err = parse_url("gopher://user:pa55@example.com/?token=abc").unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("pa55") && !shown.contains("abc"), "{shown}");
    }

    #[test]
    fn hosts_show_nondefault_ports() {
        assert_eq!(
            display_host(&Url::parse("https://huggingface.co/x").unwrap()),
            "huggingface.co"
        );
        assert_eq!(
            display_host(&Url::parse("http://127.0.0.1:8080/x").unwrap()),
            "127.0.0.1:8080"
        );
    }
}
