//! The operators' JSON HTTP API.
//!
//! Every route but `GET /healthz` and `GET /openapi.json` needs
//! `Authorization: Bearer TOKEN`,
//! compared in constant time. Bad input — malformed JSON, an unknown kind,
//! an empty key, an unknown node — is answered 4xx with
//! `{"error": "one clear sentence"}` and changes nothing.
//!
//! A submission with an `Idempotency-Key` header (as
//! `draft-ietf-httpapi-idempotency-key-header` and Stripe have it) is made
//! once: a repeat with the same key within
//! [`IDEMPOTENCY_WINDOW`](crate::model::IDEMPOTENCY_WINDOW) answers 200 with
//! the operation the first created, and one with the same key but another
//! request is refused with 422. The store decides in the submission's own
//! transaction, so a repeat that arrives while the first is still being
//! written waits for it and answers its operation (it never sees the
//! draft's 409).
//!
//! | route | what |
//! |---|---|
//! | `GET /openapi.json` | no token needed: the API's OpenAPI 3.1 document ([`crate::openapi`]) |
//! | `GET /metrics` | the metrics in the OpenMetrics text format ([`crate::metrics`]); also without the token on an address of its own ([`metrics_router`]) |
//! | `GET /healthz` | no token needed: `{"status": "ok" or "degraded", "store": "ok" or "unreachable", "nats": "connected" or "disconnected", "housekeeping": "leader" or "standby"}` |
//! | `POST /v1/ops` | submit `{"kind", "type" or "nodes", "key"?, "payload"?, "present_only"?, "idempotency_key"?}`; 201, or 200 with `Idempotent-Replayed: true` for a repeat of its `Idempotency-Key` (the header, or the body's field: the same key if both) |
//! | `POST /v1/ops/batch` | submit a JSON array of such bodies (at most [`MAX_BATCH`]) in one transaction, each with its own `"idempotency_key"`?; 201 with one answer per operation (200 when every one was a repeat); a refused one refuses the batch, with its `"index"` |
//! | `GET /v1/ops?state=&kind=&key=&limit=` | operations, newest first, with delivery counts |
//! | `GET /v1/ops/{id}` | one operation, its deliveries, and the latest attempt kept of each with its output |
//! | `POST /v1/ops/{id}/cancel` | `{"by"?, "stop_running"?}`: cancel an operation; its waiting deliveries end `cancelled` |
//! | `GET /v1/deliveries?state=&node=&op=&limit=` | deliveries (`state=dead`: the dead letters) |
//! | `GET /v1/deliveries/{id}/attempts` | the attempts kept of a delivery, newest first, with their output |
//! | `POST /v1/requeue` | `{"delivery": id}`, `{"node": name}`, `{"op": id}` or `{"all": true}` |
//! | `GET /v1/nodes` | nodes with their health and counts |
//! | `POST /v1/nodes/{name}/drain`, `.../undrain` | stop or resume new deliveries to a node |
//! | `POST /v1/nodes/{name}/remove` | `{"by"?}`: remove (decommission) a node that is down or drained; 409 otherwise |
//!
//! A submission may set how its deliveries run (`timeout`, `max_failures`,
//! `base_delay`, `max_delay`; durations as `"30m"`), over the settings of
//! its kind in this coordinator's `backstop.toml`; values out of bounds
//! are refused with 422. `by` names who cancels or removes (the client's
//! `--by`, never a secret: 422 when it looks like one); without it, the
//! fingerprint of the API token.
//!
//! Bodies and answers are typed, and read back as they were written (times
//! as RFC 3339 to the millisecond): [`SubmitRequest`] and [`SubmitAnswer`],
//! [`OpDetail`], [`CancelRequest`] and [`CancelAnswer`], [`RemoveRequest`]
//! and [`RemoveAnswer`], [`RequeueRequest`] and [`RequeueAnswer`], and the
//! model's [`Op`], [`Delivery`], [`Attempt`], [`Node`] and
//! [`crate::store::OpSummary`] — what a client such as `backstop ops`
//! deserializes.

use backstop_core::plural;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use backstop_core::clock::Clock;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::blocking::blocking;
use crate::dependencies::Dependencies;
use crate::dependencies::Report;
use crate::dispatch::Dispatcher;
use crate::model::{
    Attempt, Delivery, DeliveryState, NewOp, Node, Op, Settings, Target, check_actor,
};
use crate::store::{
    AttemptsOf, DeliveryFilter, MAX_LIMIT, OpFilter, Rejection, Requeue, Store, StoreError,
};

/// What the API serves from.
#[derive(Clone)]
pub struct ApiState {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    dispatcher: Dispatcher,
    token: [u8; 32],
    status: Arc<Dependencies>,
    kinds: Arc<BTreeMap<String, Settings>>,
}

impl ApiState {
    /// Serves `store`, waking `dispatcher` when work arrives and stopping
    /// running attempts through it; requests must carry `token`.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dispatcher: Dispatcher,
        token: &backstop_core::Secret,
    ) -> Self {
        ApiState {
            store,
            clock,
            dispatcher,
            token: Sha256::digest(token.expose().as_bytes()).into(),
            status: Arc::new(Dependencies::default()),
            kinds: Arc::new(BTreeMap::new()),
        }
    }

    /// Answers `/healthz` from `status`.
    pub fn reporting(mut self, status: Arc<Dependencies>) -> Self {
        self.status = status;
        self
    }

    /// Gives each operation submitted the settings of its kind
    /// (`[kinds.KIND]` of `backstop.toml`), under what it asks for itself.
    pub fn kinds(mut self, kinds: BTreeMap<String, Settings>) -> Self {
        self.kinds = Arc::new(kinds);
        self
    }

    /// Whether `given` is this coordinator's API token (compared in
    /// constant time, as digests).
    pub(crate) fn accepts(&self, given: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        bool::from(digest.ct_eq(&self.token))
    }

    /// The store it serves from.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Its clock.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// What it knows of its store and NATS.
    pub(crate) fn status(&self) -> &Dependencies {
        &self.status
    }

    /// Who asks for a change: `by` as the client sent it (checked:
    /// [`check_actor`]), else the fingerprint of the API token.
    pub(crate) fn actor(&self, by: Option<String>) -> Result<String, ApiError> {
        match by {
            Some(by) => {
                check_actor(&by)?;
                Ok(by)
            }
            None => Ok(format!("api token {}", hex_prefix(&self.token[..6]))),
        }
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The API's routes, each with its part of the OpenAPI document: one
/// list makes both, so that the document names every route served.
pub(crate) fn routes(authorized: Option<ApiState>) -> OpenApiRouter<ApiState> {
    let mut protected = OpenApiRouter::new()
        .routes(routes!(submit, list_ops))
        .routes(routes!(show_op))
        .routes(routes!(cancel))
        .routes(routes!(list_deliveries))
        .routes(routes!(list_attempts))
        .routes(routes!(requeue))
        .routes(routes!(list_nodes))
        .routes(routes!(drain))
        .routes(routes!(undrain))
        .routes(routes!(remove_node))
        .routes(routes!(metrics))
        .merge(
            OpenApiRouter::new()
                .routes(routes!(submit_batch))
                .layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        );
    if let Some(state) = authorized {
        protected = protected.route_layer(middleware::from_fn_with_state(state, authorize));
    }
    OpenApiRouter::with_openapi(<crate::openapi::ApiDoc as utoipa::OpenApi>::openapi())
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .merge(protected)
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let (router, _) = routes(Some(state.clone())).split_for_parts();
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    security(()),
    responses((status = 200, description = "this document", content_type = "application/json"))
)]
async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(crate::openapi::openapi_json);
    axum::Json(doc).into_response()
}

/// `GET /metrics` alone, without the token: what `backstop serve
/// --metrics-listen` serves on an address of its own, for a Prometheus
/// that is not given the API token.
pub fn metrics_router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .with_state(state)
}

/// The metrics ([`crate::metrics`]): the dispatcher's counters and what
/// the store holds now. A store that does not answer, or that the
/// coordinator knows to be down, makes `backstop_store_up 0` and leaves
/// its gauges out, still 200: the scrape is how an operator learns of it.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "the metrics, in the Prometheus text format or, for a client that asks for it, OpenMetrics", content(
            (String = "text/plain"),
            (String = "application/openmetrics-text"),
        )),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
    )
)]
async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let format = crate::metrics::Format::negotiate(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
    );
    let store = Arc::clone(&state.store);
    // A store the coordinator already knows to be down is not asked: the
    // scrape would wait out its timeout.
    let gauges = if state.status.store_reachable() {
        match blocking(move || store.gauges()).await {
            Ok(gauges) => Some(gauges),
            Err(e) => {
                tracing::debug!(
                    "/metrics could not read the store: {}",
                    crate::error_chain(&e)
                );
                None
            }
        }
    } else {
        None
    };
    let scrape = crate::metrics::Scrape {
        gauges: gauges.as_ref(),
        status: &state.status,
        now: state.clock.now(),
    };
    let text = state.dispatcher.metrics().render(&scrape, format);
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}

/// Open to all, so it says nothing of where the store is or why it fails
/// (the log does): 200 while the coordinator serves, degraded or not — a
/// coordinator that cannot reach its store keeps running and resumes by
/// itself, so restarting it would not help.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "the coordinator serves", body = Report))
)]
async fn healthz(State(state): State<ApiState>) -> Response {
    axum::Json(state.status.report()).into_response()
}

/// A refusal or failure, as `{"error": "..."}`; for an operation of a
/// batch, `{"error": "...", "index": N}` (from 0).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    index: Option<usize>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            index: None,
        }
    }

    /// Its HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// Its sentence.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// This refusal as that of the batch's operation `index`.
    fn at(mut self, index: usize) -> Self {
        self.message = format!(
            "{IN_BATCH}{index}{OF_THE_BATCH}{}; nothing of the batch was submitted",
            self.message
        );
        self.index = Some(index);
        self
    }
}

/// How the message of a refused batch starts: `operation N of the batch
/// (from 0): ...`.
const IN_BATCH: &str = "operation ";
const OF_THE_BATCH: &str = " of the batch (from 0): ";

/// The operation a refusal of `POST /v1/ops/batch` names, from its message
/// alone (for a client that keeps only the message): its index, and why.
///
/// ```
/// use backstop_queue::api::batch_refusal;
/// let said = "operation 2 of the batch (from 0): there is no node named \"gpu-9\"; nothing of the batch was submitted";
/// assert_eq!(batch_refusal(said), Some((2, "there is no node named \"gpu-9\"")));
/// assert_eq!(batch_refusal("the token is not this coordinator's"), None);
/// ```
pub fn batch_refusal(message: &str) -> Option<(usize, &str)> {
    let (index, why) = message.strip_prefix(IN_BATCH)?.split_once(OF_THE_BATCH)?;
    let why = why
        .strip_suffix("; nothing of the batch was submitted")
        .unwrap_or(why);
    Some((index.parse().ok()?, why))
}

/// What every refusal and failure answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// One clear sentence: what is wrong, and what to do.
    pub error: String,
    /// In a batch, the index (from 0) of the operation refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            index: self.index,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// How a store's refusal is answered.
fn refusal_status(r: &Rejection) -> StatusCode {
    match r {
        Rejection::UnknownNode(_) | Rejection::UnknownOp(_) | Rejection::UnknownDelivery(_) => {
            StatusCode::NOT_FOUND
        }
        Rejection::UnknownKind { .. } | Rejection::IdempotencyKeyReused { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Rejection::NotDead { .. } | Rejection::NotRemovable { .. } | Rejection::Removed { .. } => {
            StatusCode::CONFLICT
        }
        Rejection::InBatch { rejection, .. } => refusal_status(rejection),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(Rejection::InBatch { index, rejection }) => {
                ApiError::new(refusal_status(&rejection), rejection.to_string()).at(index)
            }
            StoreError::Rejected(r) => ApiError::new(refusal_status(&r), r.to_string()),
            e => {
                tracing::error!(
                    "the API could not reach the store: {}",
                    crate::error_chain(&e)
                );
                let status = if e.is_temporary() {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                ApiError::new(status, "the coordinator cannot reach its store; try again")
            }
        }
    }
}

impl From<crate::model::Invalid> for ApiError {
    fn from(e: crate::model::Invalid) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad(format!("bad path: {}", e.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad(format!("bad query string: {}", e.body_text()))
    }
}

async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this API needs Authorization: Bearer TOKEN (the coordinator's BACKSTOP_TOKEN)",
        )
        .into_response();
    };
    if state.accepts(given) {
        next.run(request).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is not this coordinator's",
        )
        .into_response()
    }
}

/// Parses a JSON body into `T`, with a message that says what is wrong.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad("the request needs a JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))
}

/// An optional integer of a request body, which JSON may write `7` or
/// `7.0` (it has one type of number, and JSON Schema takes both for an
/// integer); a fraction, or a number out of `T`'s range, is an error.
fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_i64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        })
        .and_then(|i| T::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("{n} is not an integer in range")))
}

/// [`parse`] for a body that may be left out, or be `null`: `T`'s default
/// then.
fn parse_or_default<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse::<Option<T>>(body).map(Option::unwrap_or_default)
}

/// A listing's `limit`: 0 or absent for the default (100), at most
/// [`MAX_LIMIT`].
fn limit_param(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(0) {
        n if n > MAX_LIMIT => Err(ApiError::bad(format!(
            "limit {n} is too large: at most {MAX_LIMIT} rows are listed at once"
        ))),
        n => Ok(n),
    }
}

/// The body of `POST /v1/ops`: an operation of `kind` for every node of
/// `node_type` or for the named `nodes` (one of the two).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "kind": "install",
    "type": "gpu",
    "key": "llama-cpp",
    "payload": {"backend": "llama-cpp"},
    "timeout": "30m"
}))]
pub struct SubmitRequest {
    /// What to do.
    #[schema(value_type = crate::openapi::Name)]
    pub kind: String,
    /// Every node of this type.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::Name>)]
    pub node_type: Option<String>,
    /// These nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::openapi::Name>>, min_items = 1)]
    pub nodes: Option<Vec<String>>,
    /// The desired-state key: an operation with the key replaces the
    /// undelivered ones with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 512, pattern = "\\S")]
    pub key: Option<String>,
    /// The payload (`{}` when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Makes the submission once however often it is sent, as the
    /// `Idempotency-Key` header does (the form an operation of a batch
    /// uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// With a type: only the nodes present now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub present_only: bool,
    /// How long a handler may run (`"30m"`), over its kind's and the
    /// coordinator's.
    #[serde(
        default,
        with = "crate::model::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::openapi::Duration>)]
    pub timeout: Option<std::time::Duration>,
    /// Handler failures after which a delivery is dead.
    #[serde(
        default,
        deserialize_with = "whole",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_failures: Option<u32>,
    /// The ceiling of the first wait after a failure (`"30s"`).
    #[serde(
        default,
        with = "crate::model::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::openapi::Duration>)]
    pub base_delay: Option<std::time::Duration>,
    /// The longest wait between attempts (`"15m"`).
    #[serde(
        default,
        with = "crate::model::opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::openapi::Duration>)]
    pub max_delay: Option<std::time::Duration>,
}

impl SubmitRequest {
    /// The settings the submission asks for itself.
    pub fn settings(&self) -> Settings {
        Settings {
            timeout: self.timeout,
            max_failures: self.max_failures,
            base_delay: self.base_delay,
            max_delay: self.max_delay,
        }
    }
}

/// The answer to `POST /v1/ops`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitAnswer {
    /// The operation (the first one's, for a repeat of its idempotency key).
    pub op: Op,
    /// Deliveries created.
    pub deliveries: u64,
    /// Deliveries of older operations with its key that it replaced.
    pub superseded: u64,
}

/// The answer to `GET /v1/ops/{id}`: the operation, its deliveries, and
/// the latest attempt kept of each, with what its handler printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpDetail {
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
    /// Its deliveries.
    pub deliveries: Vec<Delivery>,
    /// The latest attempt kept of each delivery that has one (an attempt
    /// that failed, or whose handler printed something), by node.
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

/// The body of `POST /v1/ops/{id}/cancel` (it may be left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Who cancels: kept and shown; never a secret [default: the
    /// fingerprint of the API token].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub by: Option<String>,
    /// Also stop the handlers of its deliveries in flight (their deliveries
    /// end `cancelled`); without it they run on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_running: bool,
}

/// The answer to `POST /v1/ops/{id}/cancel`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CancelAnswer {
    /// The operation, cancelled (by whom, when: its first cancellation).
    pub op: Op,
    /// Deliveries cancelled by this request (pending, waiting or dead).
    pub cancelled: u64,
    /// Deliveries still in flight: each ends `done` if its handler
    /// succeeds, else `cancelled`.
    pub running: u64,
    /// Of those, how many this coordinator told their node to stop
    /// (`stop_running`).
    pub stopping: u64,
}

/// The body of `POST /v1/nodes/{name}/remove` (it may be left out).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveRequest {
    /// Who removes it, as [`CancelRequest::by`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub by: Option<String>,
}

/// The answer to `POST /v1/nodes/{name}/remove`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RemoveAnswer {
    /// The node as it was.
    pub node: Node,
    /// Its deliveries cancelled (pending, waiting or dead).
    pub cancelled: u64,
    /// Its deliveries in flight on a node that is down: they end
    /// `cancelled` when they come back (`done` on a late success).
    pub running: u64,
}

/// The answer to `POST /v1/requeue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RequeueAnswer {
    /// Dead deliveries requeued.
    pub requeued: u64,
}

/// The `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header):
/// a structured-field string, `"..."`, or the bare token many clients send.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::bad(
            "send one Idempotency-Key header, not several",
        ));
    }
    let text = value
        .to_str()
        .map_err(|_| ApiError::bad(crate::model::Invalid::IdempotencyKey.to_string()))?
        .trim();
    let key = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    Ok(Some(key.to_owned()))
}

impl SubmitRequest {
    /// The operation this body asks for, with the settings of its kind
    /// under what it asks for itself; `header_key` is the request's
    /// `Idempotency-Key` header (the body's `idempotency_key` may say the
    /// same, nothing else).
    fn into_op(
        self,
        kinds: &BTreeMap<String, Settings>,
        header_key: Option<String>,
    ) -> Result<NewOp, ApiError> {
        let asked = self.settings();
        let idempotency_key = match (header_key, self.idempotency_key) {
            // Each is well-formed; together they contradict each other:
            // 422, as for any request the document allows but that cannot
            // be done.
            (Some(header), Some(body)) if header != body => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the Idempotency-Key header and the body's idempotency_key differ; send one",
                ));
            }
            (header, body) => header.or(body),
        };
        let target = match (self.node_type, self.nodes) {
            (Some(node_type), None) => Target::Type {
                node_type,
                present_only: self.present_only,
            },
            (None, Some(nodes)) => {
                if self.present_only {
                    return Err(ApiError::bad(
                        "present_only applies to a node type; named nodes are always only those",
                    ));
                }
                Target::Nodes(nodes)
            }
            _ => return Err(ApiError::bad("say either \"type\" or \"nodes\", not both")),
        };
        let settings = match kinds.get(&self.kind) {
            Some(kind) => asked.or(kind),
            None => asked,
        };
        Ok(NewOp {
            kind: self.kind,
            target,
            key: self.key,
            payload: self.payload.unwrap_or_else(|| json!({})).to_string(),
            idempotency_key,
            settings,
        }
        .validate()?)
    }
}

#[utoipa::path(
    post,
    path = "/v1/ops",
    tag = "operations",
    params(("Idempotency-Key" = Option<String>, Header, description = "makes the submission once: a repeat within a day answers the first's operation")),
    request_body = SubmitRequest,
    responses(
        (status = 201, description = "submitted", body = SubmitAnswer),
        (status = 200, description = "a repeat of its Idempotency-Key: the first submission's operation", body = SubmitAnswer,
            headers(("Idempotent-Replayed" = String, description = "true"))),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "a named node is unknown", body = ErrorBody),
        (status = 409, description = "a named node was removed", body = ErrorBody),
        (status = 422, description = "refused: an unknown kind, a bad name, key or setting, or an Idempotency-Key reused for another request", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn submit(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let idempotency_key = idempotency_key(&headers)?;
    let body: SubmitRequest = parse(&body)?;
    let op = body.into_op(&state.kinds, idempotency_key)?;
    let now = state.clock.now();
    let store = Arc::clone(&state.store);
    let submitted = blocking(move || store.submit(&op, now)).await?;
    let answer = SubmitAnswer {
        op: submitted.op,
        deliveries: submitted.deliveries,
        superseded: submitted.superseded,
    };
    if submitted.repeated {
        tracing::info!(
            "operation {} ({}) submitted again with its Idempotency-Key: answered, nothing new",
            answer.op.id,
            answer.op.kind,
        );
        let replayed = [(HeaderName::from_static("idempotent-replayed"), "true")];
        return Ok((StatusCode::OK, replayed, axum::Json(answer)).into_response());
    }
    state.dispatcher.wake();
    tracing::info!(
        "operation {} ({}) submitted: {}{}",
        answer.op.id,
        answer.op.kind,
        plural(answer.deliveries as u64, "delivery", "deliveries"),
        if answer.superseded > 0 {
            format!(", {} older ones superseded", answer.superseded)
        } else {
            String::new()
        }
    );
    Ok((StatusCode::CREATED, axum::Json(answer)).into_response())
}

/// At most this many operations in one `POST /v1/ops/batch`: one
/// transaction each, short enough not to hold other writers long.
pub const MAX_BATCH: usize = 1000;

/// The largest body `POST /v1/ops/batch` reads, in bytes (answered 413
/// beyond).
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// One answer of `POST /v1/ops/batch`, in the order of the operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchAnswer {
    /// The operation (the first one's, for a repeat of its idempotency key).
    pub op: Op,
    /// Deliveries created.
    pub deliveries: u64,
    /// Deliveries of older operations with its key that it replaced.
    pub superseded: u64,
    /// A repeat of an earlier submission's idempotency key: nothing new.
    #[serde(default)]
    pub repeated: bool,
}

#[utoipa::path(
    post,
    path = "/v1/ops/batch",
    tag = "operations",
    request_body(content = Vec<SubmitRequest>, description = "1 to 1000 operations, each as `POST /v1/ops` takes it, with its own `idempotency_key`"),
    responses(
        (status = 201, description = "submitted, in one transaction: one answer per operation, in order", body = Vec<BatchAnswer>),
        (status = 200, description = "every operation a repeat of its idempotency key: the first submissions' operations", body = Vec<BatchAnswer>),
        (status = 400, description = "malformed request; `index` names the operation", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "a named node is unknown; `index` names the operation", body = ErrorBody),
        (status = 409, description = "a named node was removed; `index` names the operation", body = ErrorBody),
        (status = 413, description = "more than 1000 operations, or a body over 16 MiB", body = ErrorBody),
        (status = 422, description = "refused: an empty batch, an unknown kind, a bad name, key or setting, or an idempotency key reused for another request; nothing was submitted", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn submit_batch(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the batch is over {} MiB; send it in smaller batches",
                MAX_BATCH_BYTES >> 20
            ),
        ),
        status => ApiError::new(status, e.body_text()),
    })?;
    // Each element read on its own, so that a bad one is named by index.
    let elements: Vec<Value> =
        parse(&body).map_err(|_| ApiError::bad("the batch must be a JSON array of operations"))?;
    if elements.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the batch is empty; send at least one operation",
        ));
    }
    if elements.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the batch has {} operations; at most {MAX_BATCH} are taken in one request: send it in smaller batches",
                elements.len()
            ),
        ));
    }
    let ops = elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| {
            serde_json::from_value::<SubmitRequest>(element)
                .map_err(|e| ApiError::bad(format!("malformed operation: {e}")))
                .and_then(|body| body.into_op(&state.kinds, None))
                .map_err(|e| e.at(index))
        })
        .collect::<Result<Vec<NewOp>, ApiError>>()?;
    let now = state.clock.now();
    let store = Arc::clone(&state.store);
    let submitted = blocking(move || store.submit_all(&ops, now)).await?;
    let made = submitted.iter().filter(|s| !s.repeated).count();
    let answers: Vec<BatchAnswer> = submitted
        .into_iter()
        .map(|s| BatchAnswer {
            op: s.op,
            deliveries: s.deliveries,
            superseded: s.superseded,
            repeated: s.repeated,
        })
        .collect();
    if made == 0 {
        tracing::info!(
            "a batch of {} submitted again with their idempotency keys: answered, nothing new",
            plural(answers.len() as u64, "operation", "operations")
        );
        return Ok((StatusCode::OK, axum::Json(answers)).into_response());
    }
    state.dispatcher.wake();
    tracing::info!(
        "a batch of {} submitted ({} new): {}",
        plural(answers.len() as u64, "operation", "operations"),
        made,
        plural(
            answers
                .iter()
                .filter(|a| !a.repeated)
                .map(|a| a.deliveries)
                .sum::<u64>(),
            "delivery",
            "deliveries"
        ),
    );
    Ok((StatusCode::CREATED, axum::Json(answers)).into_response())
}

/// The query of `GET /v1/ops`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct OpsQuery {
    /// Only operations with a delivery in this state (empty: any).
    #[param(value_type = Option<DeliveryState>)]
    state: Option<String>,
    /// Only this kind.
    #[param(value_type = Option<crate::openapi::Name>)]
    kind: Option<String>,
    /// Only operations with this key.
    #[param(min_length = 1, max_length = 512, pattern = "\\S")]
    key: Option<String>,
    /// At most this many (0 or absent: 100).
    #[param(maximum = 100_000)]
    limit: Option<u32>,
}

/// A `state` of the query: one of the states' names (`in-flight` too),
/// never empty.
fn state_param(state: Option<String>) -> Result<Option<DeliveryState>, ApiError> {
    state.map(|s| s.parse().map_err(ApiError::bad)).transpose()
}

#[utoipa::path(
    get,
    path = "/v1/ops",
    tag = "operations",
    params(OpsQuery),
    responses(
        (status = 200, description = "operations, newest first, with delivery counts", body = Vec<crate::store::OpSummary>),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 422, description = "a name or key to filter by that is not valid", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn list_ops(
    State(state): State<ApiState>,
    query: Result<Query<OpsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let filter = OpFilter {
        state: state_param(q.state)?,
        kind: filter_param("kind", q.kind)?,
        key: q
            .key
            .map(|k| crate::model::check_key(&k).map(|()| k))
            .transpose()?,
        limit: limit_param(q.limit)?,
    };
    let store = Arc::clone(&state.store);
    let ops = blocking(move || store.ops(&filter)).await?;
    Ok(axum::Json(ops).into_response())
}

fn id_param(id: &str, what: &str) -> Result<i64, ApiError> {
    id.parse()
        .map_err(|_| ApiError::bad(format!("{id:?} is not {what} id (a number)")))
}

#[utoipa::path(
    get,
    path = "/v1/ops/{id}",
    tag = "operations",
    params(("id" = i64, Path, description = "the operation's id")),
    responses(
        (status = 200, description = "the operation, its deliveries and their latest attempts", body = OpDetail),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such operation", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn show_op(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let id = id_param(&id, "an operation")?;
    let store = Arc::clone(&state.store);
    let (op, deliveries, attempts) = blocking(move || {
        let (op, deliveries) = store.op(id)?;
        let attempts = store.attempts(&AttemptsOf::Op(id))?;
        Ok::<_, StoreError>((op, deliveries, attempts))
    })
    .await?;
    Ok(axum::Json(OpDetail {
        op,
        deliveries,
        attempts,
    })
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/ops/{id}/cancel",
    tag = "operations",
    params(("id" = i64, Path, description = "the operation's id")),
    request_body(content = Option<CancelRequest>, description = "may be left out"),
    responses(
        (status = 200, description = "cancelled", body = CancelAnswer),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such operation", body = ErrorBody),
        (status = 422, description = "`by` cannot name who cancels", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn cancel(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let id = id_param(&id, "an operation")?;
    let body: CancelRequest = parse_or_default(&body)?;
    let by = state.actor(body.by)?;
    let now = state.clock.now();
    let store = Arc::clone(&state.store);
    let who = by.clone();
    let cancelled = blocking(move || store.cancel(id, &who, now)).await?;
    let stopping = if body.stop_running {
        state.dispatcher.stop(&cancelled.running).await
    } else {
        0
    };
    tracing::info!(
        "operation {id} ({}) cancelled by {by}: {} cancelled, {} in flight{}",
        cancelled.op.kind,
        plural(cancelled.cancelled, "delivery", "deliveries"),
        cancelled.running.len(),
        if body.stop_running {
            format!(", {stopping} told to stop")
        } else {
            String::new()
        }
    );
    Ok(axum::Json(CancelAnswer {
        op: cancelled.op,
        cancelled: cancelled.cancelled,
        running: cancelled.running.len() as u64,
        stopping: stopping as u64,
    })
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}/attempts",
    tag = "deliveries",
    params(("id" = i64, Path, description = "the delivery's id")),
    responses(
        (status = 200, description = "the attempts kept of the delivery, newest first", body = Vec<Attempt>),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such delivery", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn list_attempts(
    State(state): State<ApiState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id?;
    let id = id_param(&id, "a delivery")?;
    let store = Arc::clone(&state.store);
    let attempts = blocking(move || store.attempts(&AttemptsOf::Delivery(id))).await?;
    Ok(axum::Json(attempts).into_response())
}

/// The query of `GET /v1/deliveries`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// Only deliveries in this state (`dead`: the dead letters).
    #[param(value_type = Option<DeliveryState>)]
    state: Option<String>,
    /// Only deliveries to this node.
    #[param(value_type = Option<crate::openapi::Name>)]
    node: Option<String>,
    /// Only deliveries of this operation.
    op: Option<i64>,
    /// At most this many (0 or absent: 100).
    #[param(maximum = 100_000)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/v1/deliveries",
    tag = "deliveries",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "deliveries, newest first", body = Vec<Delivery>),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 422, description = "a name to filter by that is not valid", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn list_deliveries(
    State(state): State<ApiState>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let filter = DeliveryFilter {
        id: None,
        state: state_param(q.state)?,
        node: filter_param("node name", q.node)?,
        op: q.op,
        limit: limit_param(q.limit)?,
    };
    let store = Arc::clone(&state.store);
    let deliveries = blocking(move || store.deliveries(&filter)).await?;
    Ok(axum::Json(deliveries).into_response())
}

/// The body of `POST /v1/requeue`: exactly one of its fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequeueRequest {
    /// This dead delivery.
    #[serde(
        default,
        deserialize_with = "whole",
        skip_serializing_if = "Option::is_none"
    )]
    pub delivery: Option<i64>,
    /// Every dead delivery to this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Every dead delivery of this operation.
    #[serde(
        default,
        deserialize_with = "whole",
        skip_serializing_if = "Option::is_none"
    )]
    pub op: Option<i64>,
    /// Every dead delivery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl RequeueRequest {
    /// The dead deliveries it names: exactly one of its fields.
    pub(crate) fn which(self) -> Result<Requeue, ApiError> {
        match (self.delivery, self.node, self.op, self.all) {
            (Some(id), None, None, false) => Ok(Requeue::Delivery(id)),
            (None, Some(node), None, false) => Ok(Requeue::Node(node_param(node)?)),
            (None, None, Some(op), false) => Ok(Requeue::Op(op)),
            (None, None, None, true) => Ok(Requeue::All),
            _ => Err(ApiError::bad(
                "say exactly one of \"delivery\", \"node\", \"op\" or \"all\": true",
            )),
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/requeue",
    tag = "deliveries",
    request_body = RequeueRequest,
    responses(
        (status = 200, description = "how many dead deliveries were requeued", body = RequeueAnswer),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such delivery, node or operation", body = ErrorBody),
        (status = 409, description = "the delivery is not dead", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn requeue(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let body: RequeueRequest = parse(&body)?;
    let which = body.which()?;
    let n = requeue_dead(&state, which).await?;
    Ok(axum::Json(RequeueAnswer { requeued: n }).into_response())
}

/// Requeues `which` dead deliveries and wakes the dispatcher; how many.
pub(crate) async fn requeue_dead(state: &ApiState, which: Requeue) -> Result<u64, ApiError> {
    let now = state.clock.now();
    let store = Arc::clone(&state.store);
    let what = which.clone();
    let n = blocking(move || store.requeue(&what, now)).await?;
    if n > 0 {
        tracing::info!("{n} dead deliveries requeued ({which:?}) with their attempts reset");
        state.dispatcher.wake();
    }
    Ok(n)
}

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    responses(
        (status = 200, description = "nodes with their health and counts", body = Vec<Node>),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn list_nodes(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let store = Arc::clone(&state.store);
    let nodes = blocking(move || store.nodes()).await?;
    Ok(axum::Json(nodes).into_response())
}

/// A node named in a path or a body: one whose name is not valid
/// ([`check_name`](crate::model::check_name)) cannot exist, and is not
/// looked for.
fn node_param(name: String) -> Result<String, ApiError> {
    match crate::model::check_name("node name", &name) {
        Ok(()) => Ok(name),
        Err(_) => Err(StoreError::Rejected(Rejection::UnknownNode(name)).into()),
    }
}

/// A name to filter a listing by: refused when it is not valid.
fn filter_param(what: &'static str, name: Option<String>) -> Result<Option<String>, ApiError> {
    if let Some(name) = &name {
        crate::model::check_name(what, name)?;
    }
    Ok(name)
}

/// Drains or undrains node `name`, waking the dispatcher for an undrain.
pub(crate) async fn set_drained(
    state: &ApiState,
    name: String,
    drained: bool,
) -> Result<Node, ApiError> {
    let name = node_param(name)?;
    let now = state.clock.now();
    let store = Arc::clone(&state.store);
    let node = blocking(move || store.drain(&name, drained, now)).await?;
    tracing::info!(
        "node {} {}",
        node.name,
        if drained {
            "drained: it gets no new deliveries"
        } else {
            "undrained: it gets deliveries again"
        }
    );
    if !drained {
        state.dispatcher.wake();
    }
    Ok(node)
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/drain",
    tag = "nodes",
    params(("name" = crate::openapi::Name, Path, description = "the node's name")),
    responses(
        (status = 200, description = "drained: it gets no new deliveries", body = Node),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn drain(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    Ok(axum::Json(set_drained(&state, name, true).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/undrain",
    tag = "nodes",
    params(("name" = crate::openapi::Name, Path, description = "the node's name")),
    responses(
        (status = 200, description = "undrained: it gets deliveries again", body = Node),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn undrain(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    Ok(axum::Json(set_drained(&state, name, false).await?).into_response())
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/remove",
    tag = "nodes",
    params(("name" = crate::openapi::Name, Path, description = "the node's name")),
    request_body(content = Option<RemoveRequest>, description = "may be left out"),
    responses(
        (status = 200, description = "removed", body = RemoveAnswer),
        (status = 400, description = "malformed request", body = ErrorBody),
        (status = 401, description = "no token, or not this coordinator's", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 409, description = "the node is neither down nor drained", body = ErrorBody),
        (status = 422, description = "`by` cannot name who removes it", body = ErrorBody),
        (status = 503, description = "the store cannot be reached; try again", body = ErrorBody),
    )
)]
async fn remove_node(
    State(state): State<ApiState>,
    name: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let body: RemoveRequest = parse_or_default(&body)?;
    let by = state.actor(body.by)?;
    let removed = remove(&state, name, by).await?;
    Ok(axum::Json(RemoveAnswer {
        node: removed.node,
        cancelled: removed.cancelled,
        running: removed.running,
    })
    .into_response())
}

/// Removes node `name` for `by` (checked already).
pub(crate) async fn remove(
    state: &ApiState,
    name: String,
    by: String,
) -> Result<crate::store::Removed, ApiError> {
    let name = node_param(name)?;
    let now = state.clock.now();
    let store = Arc::clone(&state.store);
    let who = by.clone();
    let removed = blocking(move || store.remove_node(&name, &who, now)).await?;
    tracing::info!(
        "node {} removed by {by}: it gets nothing more; {} cancelled",
        removed.node.name,
        plural(removed.cancelled, "delivery", "deliveries")
    );
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::model::{Hold, Node, NodeStatus};
    use crate::store::{Counts, OpSummary};

    fn at(millis: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(millis)
    }

    fn op() -> Op {
        Op {
            id: 7,
            kind: "install".into(),
            node_type: Some("gpu".into()),
            nodes: Vec::new(),
            present_only: true,
            key: Some("llama".into()),
            payload: r#"{"v":1}"#.into(),
            live: true,
            created: at(1_785_542_400_123),
            settings: Settings {
                timeout: Some(Duration::from_secs(1800)),
                max_failures: Some(5),
                base_delay: Some(Duration::from_millis(1500)),
                max_delay: None,
            },
            cancelled: Some(crate::model::Cancellation {
                by: "alice".into(),
                at: at(1_785_542_409_001),
            }),
        }
    }

    fn delivery(held: Option<Hold>, finished: Option<SystemTime>) -> Delivery {
        Delivery {
            id: 3,
            op: 7,
            node: "gpu-1".into(),
            kind: "install".into(),
            key: None,
            state: DeliveryState::Pending,
            attempt: 4,
            attempts: 1,
            failures: 0,
            tries: 2,
            next_at: at(1_785_542_401_000),
            lease_until: None,
            last_error: Some("exit 1: no space".into()),
            held,
            created: at(1_785_542_400_123),
            updated: at(1_785_542_400_999),
            finished,
            cancelled: None,
        }
    }

    /// What a client reads is what the coordinator wrote, to the
    /// millisecond, for every answer of the API.
    #[test]
    fn answers_read_back_as_the_types_they_were_written_from() {
        fn round_trip<T>(value: &T)
        where
            T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        {
            let text = serde_json::to_string(value).unwrap();
            let back: T = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, value, "{text}");
        }
        round_trip(&SubmitAnswer {
            op: op(),
            deliveries: 3,
            superseded: 1,
        });
        round_trip(&OpDetail {
            op: op(),
            deliveries: vec![
                delivery(Some(Hold::Drained), None),
                delivery(None, Some(at(1_785_542_402_500))),
            ],
            attempts: vec![Attempt {
                delivery: 3,
                op: 7,
                attempt: 4,
                node: "gpu-1".into(),
                outcome: "failed".into(),
                error: Some("exit 1: no space".into()),
                output: crate::handler::Output {
                    stdout: "step 1\n".into(),
                    stderr: "no space\n".into(),
                },
                finished: at(1_785_542_402_500),
            }],
        });
        round_trip(&CancelAnswer {
            op: op(),
            cancelled: 2,
            running: 1,
            stopping: 1,
        });
        round_trip(&CancelRequest {
            by: Some("alice".into()),
            stop_running: true,
        });
        round_trip(&RemoveRequest { by: None });
        round_trip(&vec![OpSummary {
            op: op(),
            deliveries: Counts {
                pending: 1,
                in_flight: 2,
                done: 3,
                dead: 4,
                superseded: 5,
                cancelled: 6,
            },
        }]);
        round_trip(&RequeueAnswer { requeued: 2 });
        round_trip(&Node {
            name: "gpu-1".into(),
            node_type: "gpu".into(),
            kinds: vec!["install".into()],
            capacity: 2,
            transport: "nats".into(),
            status: NodeStatus::Unreachable,
            drained: false,
            last_heartbeat: Some(at(1_785_542_400_001)),
            in_flight: 1,
            pending: 2,
            dead: 0,
            registered: at(1_785_542_000_000),
            updated: at(1_785_542_400_001),
            // Never on the wire: read back empty.
            session: String::new(),
        });
        round_trip(&SubmitRequest {
            kind: "install".into(),
            node_type: Some("gpu".into()),
            present_only: true,
            timeout: Some(Duration::from_secs(5400)),
            max_failures: Some(3),
            ..SubmitRequest::default()
        });
        round_trip(&RequeueRequest {
            node: Some("gpu-1".into()),
            ..RequeueRequest::default()
        });
    }

    /// The document is OpenAPI 3.1, names every route with the methods it
    /// serves, and asks for the token on all but the two open ones.
    #[test]
    fn the_openapi_document_names_every_route_and_its_token() {
        let doc = crate::openapi::openapi_json();
        if std::env::var_os("BACKSTOP_PRINT_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        }
        assert_eq!(doc["openapi"], "3.1.0");
        let mut routes: Vec<String> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let open = op["security"] == json!([{}]);
                routes.push(format!(
                    "{} {path}{}",
                    method.to_uppercase(),
                    if open { " (open)" } else { "" }
                ));
            }
        }
        routes.sort();
        assert_eq!(
            routes,
            [
                "GET /healthz (open)",
                "GET /metrics",
                "GET /openapi.json (open)",
                "GET /v1/deliveries",
                "GET /v1/deliveries/{id}/attempts",
                "GET /v1/nodes",
                "GET /v1/ops",
                "GET /v1/ops/{id}",
                "POST /v1/nodes/{name}/drain",
                "POST /v1/nodes/{name}/remove",
                "POST /v1/nodes/{name}/undrain",
                "POST /v1/ops",
                "POST /v1/ops/batch",
                "POST /v1/ops/{id}/cancel",
                "POST /v1/requeue",
            ]
        );
        assert_eq!(doc["security"], json!([{"token": []}]));
        assert_eq!(
            doc["components"]["securitySchemes"]["token"]["scheme"],
            "bearer"
        );
    }

    #[test]
    fn a_time_that_is_not_rfc3339_is_an_error_naming_it() {
        let mut json = serde_json::to_value(op()).unwrap();
        json["created"] = json!("yesterday");
        match serde_json::from_value::<Op>(json) {
            Err(e) => assert!(
                e.to_string()
                    .contains("\"yesterday\" is not an RFC 3339 time"),
                "{e}"
            ),
            Ok(op) => panic!("{op:?}"),
        }
    }
}
