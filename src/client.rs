//! How the retry flags become a policy and an HTTP client, and the client
//! of the coordinator's API that `ops` and `nodes` use.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backstop_core::{Class, Classified, Policy, Secret};
use backstop_http::{Client, HostBoard, Method, RequestBuilder};
use backstop_ledger::HostLedger;
use backstop_queue::api::batch_refusal;
use backstop_queue::api::{
    BatchAnswer, CancelAnswer, CancelRequest, OpDetail, RemoveAnswer, RemoveRequest, RequeueAnswer,
    RequeueRequest, SubmitAnswer, SubmitRequest,
};
use backstop_queue::model::{Delivery, Node};
use backstop_queue::store::OpSummary;
use backstop_transfer::AttemptTimeout;

use crate::cli::{BackoffArgs, RetryArgs, ServerArgs};
use crate::report::{Report, exit};

impl BackoffArgs {
    /// `policy` with the flags applied.
    pub fn apply(&self, mut policy: Policy) -> Policy {
        if let Some(n) = self.attempts {
            policy = policy.with_max_attempts(n);
        }
        if let Some(d) = self.base_delay {
            policy = policy.with_initial_delay(d);
        }
        if let Some(d) = self.max_delay {
            policy = policy.with_max_delay(d);
        }
        if let Some(d) = self.max_wait {
            policy = policy.with_max_server_wait(d);
        }
        if let Some(d) = self.deadline {
            policy = policy.with_deadline(d);
        }
        policy
    }
}

impl RetryArgs {
    /// The API preset with the flags applied.
    pub fn policy(&self) -> Policy {
        self.apply(Policy::api())
    }

    /// `policy` with the flags applied.
    pub fn apply(&self, policy: Policy) -> Policy {
        let mut policy = self.backoff.apply(policy);
        if let Some(d) = self.attempt_timeout {
            policy = policy.with_attempt_timeout((!d.is_zero()).then_some(d));
        }
        policy
    }

    /// The per-attempt ceiling of a download: a runaway guard from the
    /// size unless `--attempt-timeout` says otherwise (0: none).
    pub fn transfer_attempt_timeout(&self) -> AttemptTimeout {
        match self.attempt_timeout {
            Some(t) => AttemptTimeout::Fixed((!t.is_zero()).then_some(t)),
            None => AttemptTimeout::BySize,
        }
    }

    /// An HTTP client with the policy and the timeouts of the flags.
    pub fn client(&self) -> Result<Client, Report> {
        self.client_trusting(None)
    }

    /// [`client`](Self::client), also trusting the certificates in
    /// `ca_file` (`--ca-file`): the client of `push`, `pull` and `login`.
    pub fn client_trusting(&self, ca_file: Option<&Path>) -> Result<Client, Report> {
        let builder = Client::builder()
            .policy(self.policy())
            .host_board(host_board());
        let mut builder = match ca_file {
            Some(path) => builder.root_certificates_pem(read_ca_file(path)?),
            None => builder,
        };
        if let Some(d) = self.connect_timeout {
            builder = builder.connect_timeout(d);
        }
        if let Some(d) = self.idle_timeout {
            builder = builder.header_timeout(d).read_idle_timeout(d);
        }
        Ok(builder.build()?)
    }
}

/// Where this process shares hosts' cooldowns: the state location
/// (`--state`), unless `--no-shared-cooldown`. Set once by `main`.
struct Sharing {
    state: Option<String>,
    shared: bool,
}

static SHARING: OnceLock<Sharing> = OnceLock::new();

/// The one host board of this process, made by the first client.
static HOST_BOARD: OnceLock<Arc<HostBoard>> = OnceLock::new();

/// Says where the clients of this process share hosts' cooldowns: the
/// ledger at `state` when `shared`, else nowhere (each process keeps its
/// own). Nothing is opened until a client first sends a request.
pub fn share_host_cooldowns(state: Option<&str>, shared: bool) {
    let _ = SHARING.set(Sharing {
        state: state.map(str::to_owned),
        shared,
    });
}

/// The host board every client of this process consults: a 429 to one
/// request holds the host for all of them, and, through the ledger, for
/// every process that shares it. A state location that cannot be used is
/// a warning: the board then keeps to this process.
fn host_board() -> Arc<HostBoard> {
    let board = HOST_BOARD.get_or_init(|| {
        let board = HostBoard::new();
        let Some(sharing) = SHARING.get().filter(|s| s.shared) else {
            return Arc::new(board);
        };
        match crate::state::resolve(sharing.state.as_deref()) {
            Ok(location) => Arc::new(board.with_shared(Arc::new(HostLedger::new(location)))),
            Err(report) => {
                tracing::warn!(
                    "hosts' cooldowns are not shared by this process: {}",
                    report.summary()
                );
                Arc::new(board)
            }
        }
    });
    Arc::clone(board)
}

/// A client of one coordinator's API (`backstop serve`), speaking the
/// API's own request and answer types ([`backstop_queue::api`]).
pub struct Coordinator {
    client: Client,
    base: String,
    token: Secret,
}

impl Coordinator {
    /// The coordinator `server` names, with its token and authorities
    /// from the flags, the environment or the client file
    /// ([`crate::client_config`]).
    pub fn new(server: &ServerArgs, state: Option<&str>) -> Result<Coordinator, Report> {
        let access = crate::client_config::resolve(server, state)?;
        // A coordinator on this machine answers at once or not at all:
        // retry briefly, then say so.
        let policy = Policy::api()
            .with_max_attempts(3)
            .with_initial_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2));
        let mut builder = Client::builder().policy(policy);
        if let Some(path) = &access.ca_file {
            builder = builder.root_certificates_pem(read_ca_file(path)?);
        }
        let client = builder.build()?;
        Ok(Coordinator {
            client,
            base: access.server.trim_end_matches('/').to_owned(),
            token: access.token,
        })
    }

    /// Submits an operation. With its idempotency key the coordinator makes
    /// it once, so it is retried like a GET: every retry carries the same
    /// key, and a repeat answers what the first did.
    pub async fn submit(
        &self,
        request: &SubmitRequest,
        idempotency_key: &str,
    ) -> Result<SubmitAnswer, Report> {
        self.post(Method::POST, "/v1/ops", &json_text(request)?)
            .header("idempotency-key", &format!("\"{idempotency_key}\""))
            .idempotent(true)
            .json::<SubmitAnswer>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Submits a batch of operations in one transaction
    /// (`POST /v1/ops/batch`). Each must carry its idempotency key: the
    /// batch is then retried like a GET, and a repeat answers what the
    /// first did. A refusal of one operation refuses the batch; its index
    /// comes with the report.
    pub async fn submit_batch(
        &self,
        requests: &[SubmitRequest],
    ) -> Result<Vec<BatchAnswer>, (Report, Option<(usize, String)>)> {
        self.post(
            Method::POST,
            "/v1/ops/batch",
            &json_text(&requests).map_err(|r| (r, None))?,
        )
        .idempotent(true)
        .json::<Vec<BatchAnswer>>()
        .await
        .map_err(|e| {
            let refused = refusal_detail(&e)
                .and_then(|d| batch_refusal(&d).map(|(i, why)| (i, why.to_owned())));
            (self.report(e), refused)
        })
    }

    /// Operations, newest first, at most `limit`; only those with a
    /// delivery in `state`, when given.
    pub async fn ops(&self, state: Option<&str>, limit: u32) -> Result<Vec<OpSummary>, Report> {
        let mut path = format!("/v1/ops?limit={limit}");
        if let Some(s) = state {
            path.push_str(&format!("&state={}", encode(s)));
        }
        self.get(&path)
            .json::<Vec<OpSummary>>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Dead deliveries, at most `limit`; only those to `node`, when given.
    pub async fn dead(&self, node: Option<&str>, limit: u32) -> Result<Vec<Delivery>, Report> {
        let mut path = format!("/v1/deliveries?state=dead&limit={limit}");
        if let Some(node) = node {
            path.push_str(&format!("&node={}", encode(node)));
        }
        self.get(&path)
            .json::<Vec<Delivery>>()
            .await
            .map_err(|e| self.report(e))
    }

    /// One operation and its deliveries.
    pub async fn op(&self, id: i64) -> Result<OpDetail, Report> {
        self.get(&format!("/v1/ops/{id}"))
            .json::<OpDetail>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Every delivery of operation `op`, newest first.
    pub async fn deliveries_of(&self, op: i64) -> Result<Vec<Delivery>, Report> {
        let limit = crate::cli::MAX_LIMIT;
        self.get(&format!("/v1/deliveries?op={op}&limit={limit}"))
            .json::<Vec<Delivery>>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Cancels operation `id`. Cancelling twice does what cancelling once
    /// does, so a retry is safe.
    pub async fn cancel(&self, id: i64, request: &CancelRequest) -> Result<CancelAnswer, Report> {
        self.post(
            Method::POST,
            &format!("/v1/ops/{id}/cancel"),
            &json_text(request)?,
        )
        .idempotent(true)
        .json::<CancelAnswer>()
        .await
        .map_err(|e| self.report(e))
    }

    /// Removes node `name`.
    pub async fn remove(
        &self,
        name: &str,
        request: &RemoveRequest,
    ) -> Result<RemoveAnswer, Report> {
        let path = format!("/v1/nodes/{}/remove", encode(name));
        self.post(Method::POST, &path, &json_text(request)?)
            .json::<RemoveAnswer>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Requeues dead deliveries with their attempts reset.
    pub async fn requeue(&self, request: &RequeueRequest) -> Result<RequeueAnswer, Report> {
        self.post(Method::POST, "/v1/requeue", &json_text(request)?)
            .json::<RequeueAnswer>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Every node, with its health and counts.
    pub async fn nodes(&self) -> Result<Vec<Node>, Report> {
        self.get("/v1/nodes")
            .json::<Vec<Node>>()
            .await
            .map_err(|e| self.report(e))
    }

    /// Drains `name` (no new deliveries), or undrains it.
    pub async fn drain(&self, name: &str, undo: bool) -> Result<Node, Report> {
        let verb = if undo { "undrain" } else { "drain" };
        let path = format!("/v1/nodes/{}/{verb}", encode(name));
        self.post(Method::POST, &path, "{}")
            .json::<Node>()
            .await
            .map_err(|e| self.report(e))
    }

    fn get(&self, path: &str) -> RequestBuilder<'_> {
        self.client
            .request(Method::GET, &format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// A request with a JSON body: not retried once it may have arrived,
    /// unless made idempotent.
    fn post(&self, method: Method, path: &str, body: &str) -> RequestBuilder<'_> {
        self.client
            .request(method, &format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .idempotent(false)
    }

    /// How a failed call is told.
    fn report(&self, e: backstop_http::Error) -> Report {
        use backstop_core::AttemptError::Failed;
        use backstop_http::HttpFailure;
        match e.retry_error().and_then(|r| r.last.as_ref()) {
            // The coordinator said no: its sentence is the message. Input
            // it finds invalid (400, 422: an unknown kind, an empty key, a
            // bad name) is a usage error, like a bad flag.
            Some(Failed(HttpFailure::Status { status, detail, .. }))
                if status.is_client_error() =>
            {
                let message = format!(
                    "the coordinator refused: {}",
                    detail.clone().unwrap_or_else(|| status.to_string())
                );
                let code = match status.as_u16() {
                    400 | 422 => exit::USAGE,
                    _ => exit::FAILURE,
                };
                let report = Report::new(code, message);
                if status.as_u16() == 401 {
                    report.hint(
                        "use the token `backstop serve` uses (--token-file, BACKSTOP_TOKEN_FILE, \
                         BACKSTOP_TOKEN, or token_file in the client file)",
                    )
                } else {
                    report
                }
            }
            // A certificate it does not trust: permanent, unlike a
            // coordinator that is not up.
            Some(Failed(f @ HttpFailure::Transport(t))) if t.is_connect() => {
                let hint = if f.verdict().class == Class::Permanent {
                    "if the coordinator's certificate is signed by an authority of your own, \
                     trust it with --ca-file (or BACKSTOP_CA_FILE)"
                        .to_owned()
                } else {
                    format!(
                        "is `backstop serve` running at {}? (--server, BACKSTOP_SERVER, or \
                         server in the client file)",
                        self.base
                    )
                };
                Report::from(e).hint(hint)
            }
            _ => Report::from(e),
        }
    }
}

/// What the coordinator said when it refused a request (a 4xx).
fn refusal_detail(e: &backstop_http::Error) -> Option<String> {
    use backstop_core::AttemptError::Failed;
    use backstop_http::HttpFailure;
    match e.retry_error().and_then(|r| r.last.as_ref()) {
        Some(Failed(HttpFailure::Status { status, detail, .. })) if status.is_client_error() => {
            detail.clone()
        }
        _ => None,
    }
}

/// The PEM bundle of `--ca-file`.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, Report> {
    std::fs::read(path).map_err(|e| {
        Report::from_error(exit::USAGE, &e).detail(format!("--ca-file {}", path.display()))
    })
}

/// A request body as JSON text.
fn json_text(body: &impl serde::Serialize) -> Result<String, Report> {
    serde_json::to_string(body).map_err(|e| Report::from_error(exit::FAILURE, &e))
}

/// Percent-encodes a path or query component.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
