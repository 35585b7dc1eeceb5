//! The client: reqwest with rustls, timeouts on by default, and the retry
//! policy every request made through it uses.

use std::sync::Arc;
use std::time::Duration;

use backstop_core::{Policy, RetryBudget};
use reqwest::Method;

use crate::{Error, HostBoard, RequestBuilder};

/// Default time to establish a TCP and TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time from sending a request to receiving the response headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default longest silence while reading a body.
pub const READ_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An HTTP client whose every request is retried under a [`Policy`].
///
/// Cheap to clone (connections are pooled and shared). Connect, response
/// header and read-idle timeouts are always on, so a server that hangs
/// never hangs the caller.
///
/// ```no_run
/// # async fn demo() -> Result<(), backstop_http::Error> {
/// let client = backstop_http::Client::new()?;
/// let body = client.get("https://huggingface.co/api/models?limit=1").bytes().await?;
/// println!("{} bytes", body.bytes.len());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: reqwest::Client,
    /// The same, but it never follows a redirect to another origin: for
    /// requests carrying credentials in headers that reqwest does not strip
    /// on such a redirect (it strips only `Authorization` and `Cookie`).
    pub(crate) same_origin: reqwest::Client,
    /// The same as `inner` without reqwest's read timeout, for large
    /// request bodies: that timer runs while a body goes out, and would cut
    /// a slow but moving upload. Their progress is watched instead.
    pub(crate) uploads: reqwest::Client,
    pub(crate) policy: Policy,
    pub(crate) header_timeout: Duration,
    pub(crate) read_idle_timeout: Duration,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    /// Hosts that asked to be left alone: consulted before every request.
    pub(crate) hosts: Arc<HostBoard>,
}

impl Client {
    /// A client with the defaults: [`Policy::api`], and the timeouts
    /// [`CONNECT_TIMEOUT`], [`HEADER_TIMEOUT`], [`READ_IDLE_TIMEOUT`].
    pub fn new() -> Result<Client, Error> {
        Client::builder().build()
    }

    /// Configures a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A GET request.
    pub fn get(&self, url: &str) -> RequestBuilder<'_> {
        self.request(Method::GET, url)
    }

    /// A request with any method.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder<'_> {
        RequestBuilder::new(self, method, url)
    }

    /// The policy requests use unless they set their own.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The board of hosts' cooldowns every request consults.
    pub fn host_board(&self) -> &Arc<HostBoard> {
        &self.hosts
    }
}

/// Builds a [`Client`].
#[derive(Debug)]
pub struct ClientBuilder {
    policy: Policy,
    connect_timeout: Duration,
    header_timeout: Duration,
    read_idle_timeout: Duration,
    user_agent: String,
    budget: Option<Arc<RetryBudget>>,
    roots: Vec<Vec<u8>>,
    hosts: Option<Arc<HostBoard>>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            policy: Policy::api(),
            connect_timeout: CONNECT_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            read_idle_timeout: READ_IDLE_TIMEOUT,
            user_agent: concat!("backstop/", env!("CARGO_PKG_VERSION")).to_owned(),
            budget: None,
            roots: Vec::new(),
            hosts: None,
        }
    }
}

impl ClientBuilder {
    /// The retry policy of every request (default [`Policy::api`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Time allowed to connect (TCP and TLS).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed between sending a request (its whole body) and its
    /// response headers.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Longest silence allowed while reading a body, or while sending one
    /// (the server taking none of it); the timer restarts on every chunk,
    /// so a slow but moving transfer is never cut.
    pub fn read_idle_timeout(mut self, timeout: Duration) -> Self {
        self.read_idle_timeout = timeout;
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// A retry budget shared by every request of this client (and of any
    /// other holder of the same `Arc`).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The board of hosts' cooldowns to consult before every request and
    /// tell after every answer; share one between clients (and give it the
    /// cooldown ledger, [`HostBoard::with_shared`]) so that a host's 429
    /// holds all of them. Default: a board of this client's own, in memory.
    pub fn host_board(mut self, board: Arc<HostBoard>) -> Self {
        self.hosts = Some(board);
        self
    }

    /// Trusts the certificate authorities of a PEM bundle (a private
    /// registry's own CA) besides the system's. A bundle that is not PEM
    /// makes [`build`](ClientBuilder::build) fail with [`Error::Client`].
    pub fn root_certificates_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.roots.push(pem.into());
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client, Error> {
        let mut roots = Vec::new();
        for pem in &self.roots {
            roots.extend(reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Client)?);
        }
        let unread = || {
            let mut builder = reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .user_agent(&self.user_agent)
                .use_rustls_tls();
            for root in &roots {
                builder = builder.add_root_certificate(root.clone());
            }
            builder
        };
        let base = || unread().read_timeout(self.read_idle_timeout);
        let inner = base().build().map_err(Error::Client)?;
        let uploads = unread().build().map_err(Error::Client)?;
        let same_origin = base()
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let first = attempt.previous().first().map(url::Url::origin);
                if attempt.previous().len() > 10 {
                    attempt.error("too many redirects")
                } else if first.is_some_and(|o| o != attempt.url().origin()) {
                    attempt.stop()
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(Error::Client)?;
        Ok(Client {
            inner,
            same_origin,
            uploads,
            policy: self.policy,
            header_timeout: self.header_timeout,
            read_idle_timeout: self.read_idle_timeout,
            budget: self.budget,
            hosts: self.hosts.unwrap_or_default(),
        })
    }
}
