//! An HTTP proxy in front of a real server that fails chosen requests: a
//! status instead of forwarding one (a 503 on a registry's closing `PUT`),
//! or forwarding one and then losing its answer (the server acted, the
//! client cannot know).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What happens to a matched request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    /// Answered with this status (and these headers), never forwarded.
    Status(u16, Vec<(String, String)>),
    /// Forwarded; the answer is dropped with the connection.
    Lose,
    /// Forwarded after this pause.
    Delay(std::time::Duration),
    /// Held, never forwarded, never answered (until a 2-minute guard).
    Stall,
    /// Forwarded; the answer's body arrives with its middle byte flipped
    /// (a link or a cache that corrupts what it carries).
    Flip,
    /// Forwarded; the answer gets these headers too.
    Annotate(Vec<(String, String)>),
}

#[derive(Debug)]
struct Rule {
    method: String,
    path: String,
    action: Action,
    /// Used once, or for every match until [`HttpProxy::clear`].
    once: bool,
}

struct Shared {
    upstream: SocketAddr,
    rules: Mutex<Vec<Rule>>,
    body_bytes: AtomicU64,
    matched: AtomicU64,
    stalled: AtomicU64,
}

/// An HTTP/1.1 proxy on 127.0.0.1 to one upstream. The client's `Host` is
/// passed on, so the server's `Location`s point back at the proxy. It
/// stops when dropped.
///
/// ```no_run
/// use backstop_faultserver::{DockerRegistry, HttpProxy};
///
/// let registry = DockerRegistry::start();
/// let proxy = HttpProxy::start(registry.addr());
/// proxy.fail_next("PUT", "/blobs/uploads/", 503, &[]);
/// proxy.lose_next("PUT", "digest=");
/// ```
pub struct HttpProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl HttpProxy {
    /// Starts a proxy to `upstream` on a free port, on its own thread.
    ///
    /// # Panics
    /// When the runtime or the socket cannot be created.
    pub fn start(upstream: SocketAddr) -> HttpProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("proxy socket");
        listener.set_nonblocking(true).expect("proxy socket mode");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            rules: Mutex::new(Vec::new()),
            body_bytes: AtomicU64::new(0),
            matched: AtomicU64::new(0),
            stalled: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        crate::serve_http(&runtime, listener, s, handle);
        HttpProxy {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next `method` request whose path and query contain
    /// `path` with `status` and `headers`, without forwarding it.
    pub fn fail_next(&self, method: &str, path: &str, status: u16, headers: &[(&str, &str)]) {
        self.add(method, path, Action::Status(status, owned(headers)));
    }

    /// Answers every `method` request whose path and query contain `path`
    /// with `status` and `headers`, without forwarding it, until
    /// [`HttpProxy::clear`]: a server (or a proxy before it) that never
    /// takes such a request.
    pub fn fail_all(&self, method: &str, path: &str, status: u16, headers: &[(&str, &str)]) {
        self.push_rule(method, path, Action::Status(status, owned(headers)), false);
    }

    /// Forwards the next `method` request whose path and query contain
    /// `path`, and adds `headers` to its answer (a rate-limit header on a
    /// success).
    pub fn annotate_next(&self, method: &str, path: &str, headers: &[(&str, &str)]) {
        self.add(method, path, Action::Annotate(owned(headers)));
    }

    /// Forwards the next `method` request whose path and query contain
    /// `path`, then closes the connection instead of answering.
    pub fn lose_next(&self, method: &str, path: &str) {
        self.add(method, path, Action::Lose);
    }

    /// Holds the next `method` request whose path and query contain
    /// `path`: its body is read, but it is never forwarded nor answered (a
    /// link that dies with a chunk on its way). [`HttpProxy::stalled`]
    /// counts the requests held.
    pub fn stall_next(&self, method: &str, path: &str) {
        self.add(method, path, Action::Stall);
    }

    /// Forwards the next `method` request whose path and query contain
    /// `path`, and flips the middle byte of its answer's body.
    pub fn flip_next(&self, method: &str, path: &str) {
        self.add(method, path, Action::Flip);
    }

    /// Flips the middle byte of the answer to every `method` request whose
    /// path and query contain `path`, until [`HttpProxy::clear`]: a server
    /// that serves the same wrong bytes every time.
    pub fn flip_all(&self, method: &str, path: &str) {
        self.push_rule(method, path, Action::Flip, false);
    }

    /// Requests held by [`HttpProxy::stall_next`] so far.
    pub fn stalled(&self) -> u64 {
        self.shared.stalled.load(Ordering::SeqCst)
    }

    /// Holds every `method` request whose path and query contain `path`
    /// for `pause` before forwarding it, until [`HttpProxy::clear`]: a
    /// slow link, so that a test can stop a push part way.
    pub fn delay_all(&self, method: &str, path: &str, pause: std::time::Duration) {
        self.push_rule(method, path, Action::Delay(pause), false);
    }

    /// Drops every rule.
    pub fn clear(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn add(&self, method: &str, path: &str, action: Action) {
        self.push_rule(method, path, action, true);
    }

    fn push_rule(&self, method: &str, path: &str, action: Action, once: bool) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Rule {
                method: method.to_owned(),
                path: path.to_owned(),
                action,
                once,
            });
    }

    /// Request body bytes received from clients so far.
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }

    /// Requests a rule has matched so far.
    pub fn matched(&self) -> u64 {
        self.shared.matched.load(Ordering::SeqCst)
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, io::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    shared
        .body_bytes
        .fetch_add(body.len() as u64, Ordering::SeqCst);
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let action = {
        let mut rules = shared.rules.lock().unwrap_or_else(|p| p.into_inner());
        let fits = |r: &Rule| r.method == parts.method.as_str() && target.contains(&r.path);
        // A one-off fault comes before a standing rule.
        let found = rules
            .iter()
            .position(|r| r.once && fits(r))
            .or_else(|| rules.iter().position(fits));
        found.map(|i| {
            if rules[i].once {
                rules.remove(i).action
            } else {
                rules[i].action.clone()
            }
        })
    };
    if let Some(Action::Delay(pause)) = &action {
        tokio::time::sleep(*pause).await;
    }
    if action == Some(Action::Stall) {
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_secs(120)).await;
        return Err(io::Error::other("stalled on purpose"));
    }
    if action.is_some() {
        shared.matched.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(Action::Status(status, headers)) = &action {
        let mut resp = Response::builder().status(*status);
        for (n, v) in headers {
            resp = resp.header(n, v);
        }
        return resp.body(Full::new(Bytes::new())).map_err(io::Error::other);
    }
    let stream = TcpStream::connect(shared.upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(conn);
    let forward = Request::from_parts(parts, Full::new(body));
    let answer = sender
        .send_request(forward)
        .await
        .map_err(io::Error::other)?;
    if action == Some(Action::Lose) {
        return Err(io::Error::other("answer lost on purpose"));
    }
    let (mut parts, body) = answer.into_parts();
    if let Some(Action::Annotate(headers)) = &action {
        for (n, v) in headers {
            let name = hyper::header::HeaderName::try_from(n.as_str()).map_err(io::Error::other)?;
            let value =
                hyper::header::HeaderValue::try_from(v.as_str()).map_err(io::Error::other)?;
            parts.headers.insert(name, value);
        }
    }
    let mut body = body.collect().await.map_err(io::Error::other)?.to_bytes();
    if action == Some(Action::Flip) && !body.is_empty() {
        let mut flipped = body.to_vec();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0xff;
        body = Bytes::from(flipped);
    }
    Ok(Response::from_parts(parts, Full::new(body)))
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}
