//! A scriptable HTTP/1.1 server that injects faults on demand.
//!
//! Each path has a queue of [`Reply`]s, used once each in order, and an
//! optional reply for when the queue is empty; anything else gets a 404.
//! Every request is recorded so a test can assert what the client sent, and
//! when.
//!
//! Besides scripted replies it serves files with or without honouring
//! `Range` ([`Reply::file`]), a fake Hugging Face Hub
//! ([`FaultServer::hub_repo`]), stands a TCP [`Proxy`] in front of a real
//! server to cut its connections (after some bytes, or on demand: a
//! database or a message bus that goes away for one client), and starts a
//! real nginx ([`Nginx`]), alone or as a reverse proxy that buffers
//! whole requests, and a real OCI registry ([`DockerRegistry`]).

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod http_proxy;
mod hub;
mod nginx;
mod proxy;
mod python;
mod range;
mod registry;

pub use http_proxy::HttpProxy;
pub use hub::{HubFile, cdn_path};
pub use nginx::Nginx;
pub use proxy::Proxy;
pub use python::{
    HUGGINGFACE_HUB, ORAS, SCHEMATHESIS, huggingface_hub_python, oras_python, schemathesis,
    venv_python,
};
pub use registry::DockerRegistry;

/// How long a stalled reply hangs before giving up on its own, so that a
/// forgotten stall cannot keep a test process alive forever.
const STALL: Duration = Duration::from_secs(120);

/// How long a cut body waits after its last bytes before the cut.
const CUT_FLUSH: Duration = Duration::from_millis(20);

/// What goes wrong with a reply, if anything.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fault {
    None,
    /// Never send the response headers.
    Stall,
    /// Send the headers (with the full length) and this many body bytes,
    /// then drop the connection.
    CutAfter(usize),
    /// Send the headers and this many body bytes, then hang.
    StallAfter(usize),
    /// Wait this long before sending the headers.
    Delay(Duration),
    /// Send the body `bytes` at a time, pausing `every` between pieces.
    Trickle {
        bytes: usize,
        every: Duration,
    },
}

/// How a reply treats a request's `Range` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ranges {
    /// A plain reply: the header is not looked at.
    Plain,
    /// Honoured as a file server does: 206 with `Content-Range`, 416 past
    /// the end, the whole file when `If-Range` does not match the `ETag`.
    Honour,
    /// Ignored: always 200 with the whole file.
    Ignore,
    /// Answered 206, but with a `Content-Range` that starts one byte past
    /// what was asked for, over the bytes that were asked for.
    Wrong,
}

/// One scripted response.
#[derive(Clone, Debug)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Bytes,
    fault: Fault,
    ranges: Ranges,
    corrupt: Option<u64>,
}

impl Reply {
    /// A response with this status and an empty body.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
            fault: Fault::None,
            ranges: Ranges::Plain,
            corrupt: None,
        }
    }

    /// A file as a static file server serves it: `Accept-Ranges: bytes`,
    /// and a request's `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`)
    /// answered with 206 and `Content-Range`, or 416 past the end. With an
    /// `ETag` header set, an `If-Range` that does not match it gets the
    /// whole file. Faults apply to the bytes actually sent.
    pub fn file(body: impl Into<Bytes>) -> Self {
        Reply {
            ranges: Ranges::Honour,
            ..Reply::ok(body).header("Accept-Ranges", "bytes")
        }
    }

    /// Ignores `Range`: the whole file with a 200, as some servers and
    /// proxies do.
    pub fn ignore_range(mut self) -> Self {
        self.ranges = Ranges::Ignore;
        self
    }

    /// Answers a `Range` with a 206 whose `Content-Range` is off by one:
    /// the bytes are those asked for, the header claims they start a byte
    /// later.
    pub fn wrong_content_range(mut self) -> Self {
        self.ranges = Ranges::Wrong;
        self
    }

    /// Flips the bits of the byte at `offset` of the file (counted from
    /// the start of the whole body, whatever range is sent).
    pub fn corrupt_at(mut self, offset: u64) -> Self {
        self.corrupt = Some(offset);
        self
    }

    /// Sends the body `bytes` at a time with a pause of `every` between
    /// pieces: a link that moves, but too slowly.
    pub fn trickle(mut self, bytes: usize, every: Duration) -> Self {
        self.fault = Fault::Trickle {
            bytes: bytes.max(1),
            every,
        };
        self
    }

    /// A 200 with this body.
    pub fn ok(body: impl Into<Bytes>) -> Self {
        Reply::status(200).body(body)
    }

    /// A 200 with this JSON body and its content type.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Reply::ok(body).header("Content-Type", "application/json")
    }

    /// A redirect (`status` 301, 302, 307...) to `location`.
    pub fn redirect(status: u16, location: &str) -> Self {
        Reply::status(status).header("Location", location)
    }

    /// A request that never gets its response headers.
    pub fn stall() -> Self {
        Reply {
            fault: Fault::Stall,
            ..Reply::status(200)
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Sends the headers and the first `n` bytes, then drops the connection
    /// (a reset mid-body).
    pub fn cut_after(mut self, n: usize) -> Self {
        self.fault = Fault::CutAfter(n);
        self
    }

    /// Sends the headers and the first `n` bytes, then goes silent.
    pub fn stall_after(mut self, n: usize) -> Self {
        self.fault = Fault::StallAfter(n);
        self
    }

    /// Waits `delay` before answering.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.fault = Fault::Delay(delay);
        self
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// "GET", "POST"...
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// Every header, names in lower case.
    pub headers: Vec<(String, String)>,
    /// When its headers arrived, by the wall clock: requests from several
    /// processes compare.
    pub at: SystemTime,
    /// The body's first [`KEPT_BODY`] bytes (all of a small one).
    pub body: Bytes,
    /// The body's length, as far as it arrived.
    pub body_len: u64,
    /// The sha256 of the whole body (hex), when it arrived whole.
    pub body_sha256: Option<String>,
}

/// How much of each request body is kept for a test to look at; the
/// rest is only counted and hashed, so that multi-GB uploads cost no
/// memory.
pub const KEPT_BODY: usize = 1 << 20;

impl Recorded {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    scripts: HashMap<String, VecDeque<Reply>>,
    always: HashMap<String, Reply>,
    requests: Vec<Recorded>,
    /// Requests being answered now: read, and not yet past their
    /// reply's delay.
    answering: usize,
    /// The most requests answered at once.
    peak_answering: usize,
}

/// One request being answered, counted until it is dropped (the answer
/// is given, or the client went away).
struct Answering(Arc<Mutex<State>>);

impl Answering {
    fn start(state: &Arc<Mutex<State>>) -> Answering {
        let mut s = lock(state);
        s.answering += 1;
        s.peak_answering = s.peak_answering.max(s.answering);
        Answering(Arc::clone(state))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        lock(&self.0).answering -= 1;
    }
}

/// The running server. It stops when dropped.
pub struct FaultServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another
        // runtime (an async test): shut it down in the background instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A test that panicked while holding the lock must not hide the
    // requests from the next assertion.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultServer {
    /// Starts a server on 127.0.0.1 on a free port, on its own thread.
    ///
    /// # Panics
    /// When the runtime or the socket cannot be created: this is test
    /// infrastructure, and a test cannot go on without it. See
    /// [`FaultServer::try_start`] for a caller that reports it instead.
    pub fn start() -> FaultServer {
        FaultServer::try_start().expect("fault server")
    }

    /// Starts a server on 127.0.0.1 on a free port, on its own thread, or
    /// says why it cannot (no thread, no socket, no free port).
    pub fn try_start() -> std::io::Result<FaultServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        // Bound with std so that starting works inside another runtime too.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        serve_http(&runtime, listener, shared, answer);
        Ok(FaultServer {
            addr,
            state,
            runtime: Some(runtime),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Queues replies for `path` (without the query), each used once.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state)
            .scripts
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    /// The reply for `path` once its queue is empty.
    pub fn always(&self, path: &str, reply: Reply) {
        lock(&self.state).always.insert(path.to_owned(), reply);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// The most requests answered at once so far: each counts from the
    /// moment it is read until its reply's [`Reply::delay`] has passed and
    /// the reply is given. A client's bound on the requests it has in
    /// flight to one server shows here, its delayed requests overlapping.
    pub fn peak_concurrent(&self) -> usize {
        lock(&self.state).peak_answering
    }

    /// How many requests asked for `path` (query ignored).
    pub fn hits(&self, path: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|r| r.uri.split('?').next() == Some(path))
            .count()
    }
}

type Body = BoxBody<Bytes, io::Error>;

/// Serves HTTP/1.1 on `listener` from `runtime`, each request answered by
/// `handle` with its own handle on `state`: the accept loop every server
/// of this crate runs.
pub(crate) fn serve_http<S, F, Fut, B, E>(
    runtime: &tokio::runtime::Runtime,
    listener: std::net::TcpListener,
    state: Arc<S>,
    handle: F,
) where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, Request<Incoming>) -> Fut + Copy + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<B>, E>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    runtime.spawn(async move {
        let Ok(listener) = TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(Arc::clone(&state), req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let answering = Answering::start(&state);
    let (reply, index) = {
        let mut state = lock(&state);
        let index = state.requests.len();
        state.requests.push(Recorded {
            at: SystemTime::now(),
            method: req.method().to_string(),
            uri: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_else(|| path.clone()),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: Bytes::new(),
            body_len: 0,
            body_sha256: None,
        });
        let scripted = state.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        (scripted.or_else(|| state.always.get(&path).cloned()), index)
    };
    let reply = reply.unwrap_or_else(|| Reply::status(404).body("no such path"));
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let reply = range::apply(
        reply,
        header("range").as_deref(),
        header("if-range").as_deref(),
    );
    // Read the request body (keep-alive connections stay usable), keeping
    // its start, its length and its hash.
    let (body, body_len, body_sha256) = read_body(req.into_body()).await;
    if let Some(recorded) = lock(&state).requests.get_mut(index) {
        recorded.body = body;
        recorded.body_len = body_len;
        recorded.body_sha256 = body_sha256;
    }

    match reply.fault {
        Fault::Stall => tokio::time::sleep(STALL).await,
        Fault::Delay(d) => tokio::time::sleep(d).await,
        _ => {}
    }
    drop(answering);
    let mut builder = Response::builder().status(reply.status);
    let mut has_length = false;
    for (k, v) in &reply.headers {
        has_length |= k.eq_ignore_ascii_case("content-length");
        builder = builder.header(k, v);
    }
    if !has_length {
        builder = builder.header("Content-Length", reply.body.len());
    }
    let body = match reply.fault {
        Fault::CutAfter(n) => broken(reply.body, n, false),
        Fault::StallAfter(n) => broken(reply.body, n, true),
        Fault::Trickle { bytes, every } => trickle(reply.body, bytes, every),
        _ => Full::new(reply.body).map_err(|e| match e {}).boxed(),
    };
    Ok(builder.body(body).unwrap_or_else(|_| {
        Response::new(
            Full::new(Bytes::from_static(b"bad scripted reply"))
                .map_err(|e| match e {})
                .boxed(),
        )
    }))
}

/// A request body's first [`KEPT_BODY`] bytes, its length, and its sha256
/// when it arrived whole.
async fn read_body(mut body: Incoming) -> (Bytes, u64, Option<String>) {
    use sha2::Digest;
    let mut kept = Vec::new();
    let mut len = 0u64;
    let mut hasher = sha2::Sha256::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (kept.into(), len, None);
        };
        if let Some(data) = frame.data_ref() {
            let room = KEPT_BODY.saturating_sub(kept.len()).min(data.len());
            kept.extend_from_slice(&data[..room]);
            len += data.len() as u64;
            hasher.update(data);
        }
    }
    let hex = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (kept.into(), len, Some(hex))
}

/// A body sent `bytes` at a time, `every` apart.
fn trickle(body: Bytes, bytes: usize, every: Duration) -> Body {
    let frames = stream::unfold((body, true), move |(rest, first)| async move {
        if rest.is_empty() {
            return None;
        }
        if !first {
            tokio::time::sleep(every).await;
        }
        let piece = rest.slice(..bytes.min(rest.len()));
        let rest = rest.slice(piece.len()..);
        Some((Ok(Frame::data(piece)), (rest, false)))
    });
    StreamBody::new(frames).boxed()
}

/// A body that sends its first `n` bytes, then fails (the connection is
/// dropped) or hangs.
fn broken(body: Bytes, n: usize, hang: bool) -> Body {
    let head = body.slice(..n.min(body.len()));
    let frames = stream::unfold(Some(head), move |state| async move {
        match state {
            Some(head) => Some((Ok(Frame::data(head)), None)),
            None => {
                // Pause before failing, so that hyper flushes the bytes
                // above: failing at once drops them with the connection.
                tokio::time::sleep(if hang { STALL } else { CUT_FLUSH }).await;
                Some((Err(io::Error::other("scripted cut")), None))
            }
        }
    });
    StreamBody::new(frames).boxed()
}
