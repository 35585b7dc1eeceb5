//! The operators' web dashboard, at `/ui` on the API's address.
//!
//! Server-rendered pages ([`pages`], with maud), one stylesheet and a
//! little plain JavaScript for live updates, all embedded in the binary:
//! nothing is loaded from elsewhere, and the Content-Security-Policy
//! allows nothing else.
//!
//! Signing in with the API token once starts a [`session`] (kept in this
//! process's memory: a restart signs everyone out). Without one, every
//! page sends the browser to the sign-in page, and every POST is refused.
//! Every POST must carry its session's CSRF token and come from this
//! origin (`Origin`, `Sec-Fetch-Site`); else 403 and nothing changes.
//!
//! | route | what |
//! |---|---|
//! | `GET /ui` | overview: deliveries by state and by node, the last hour, the oldest pending, health |
//! | `GET /ui/ops?kind=&key=&state=`, `GET /ui/ops/{id}` | operations; one operation's deliveries with their output |
//! | `GET /ui/dead` | dead letters by node and by operation |
//! | `GET /ui/requeue?delivery=|node=|op=|all=true`, `POST /ui/requeue` | asks, then requeues |
//! | `GET /ui/nodes`, `POST /ui/nodes/{name}/drain`, `.../undrain` | nodes |
//! | `GET /ui/nodes/{name}/remove`, `POST /ui/nodes/{name}/remove` | asks, then removes a node |
//! | `GET /ui/sign-in`, `POST /ui/sign-in`, `POST /ui/sign-out` | the session |

pub mod pages;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::Markup;

use crate::api::{self, ApiError, ApiState, RequeueRequest};
use crate::blocking::blocking;
use crate::model::DeliveryState;
use crate::store::{DeliveryFilter, OpFilter, Requeue};
use pages::Tab;
use session::{Flash, SignedIn};

/// The largest form the dashboard reads.
const FORM_LIMIT: usize = 16 * 1024;

/// What the dashboard serves from: the API's state and the sessions.
#[derive(Clone)]
pub struct UiState {
    api: ApiState,
    sessions: Arc<session::Sessions>,
    secure: bool,
}

impl UiState {
    /// The dashboard of `api`; `secure` when it is served over HTTPS (its
    /// cookie is then `Secure`).
    pub fn new(api: ApiState, secure: bool) -> Self {
        UiState {
            api,
            sessions: Arc::new(session::Sessions::default()),
            secure,
        }
    }
}

/// The signed-in session a request came with.
#[derive(Clone)]
struct Current {
    id: String,
    signed: SignedIn,
}

/// The dashboard's routes.
pub fn router(state: UiState) -> Router {
    let signed_in = Router::new()
        .route("/ui", get(overview))
        .route("/ui/", get(overview))
        .route("/ui/ops", get(ops))
        .route("/ui/ops/{id}", get(op))
        .route("/ui/dead", get(dead))
        .route("/ui/requeue", get(confirm_requeue).post(requeue))
        .route("/ui/nodes", get(nodes))
        .route("/ui/nodes/{name}/drain", post(drain))
        .route("/ui/nodes/{name}/undrain", post(undrain))
        .route("/ui/nodes/{name}/remove", get(confirm_remove).post(remove))
        .route("/ui/sign-out", post(sign_out))
        .route_layer(middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/assets/{name}", get(asset))
        .merge(signed_in)
        .layer(middleware::map_response(headers))
        .with_state(state)
}

/// What every answer of the dashboard carries: no framing, no caching, no
/// script or style from anywhere but here.
async fn headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Not `no-referrer`: under it a browser sends `Origin: null` with a
    // form, which the origin check refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind): (&'static str, &'static str) = match name.as_str() {
        "ui.css" => (include_str!("assets/ui.css"), "text/css; charset=utf-8"),
        "ui.js" => (
            include_str!("assets/ui.js"),
            "text/javascript; charset=utf-8",
        ),
        "icon.svg" => (include_str!("assets/icon.svg"), "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

fn forbidden(why: &str) -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

/// Why a POST seems to come from another site: its `Sec-Fetch-Site` says
/// so, or its `Origin` is not this server's. `None`: it does not.
fn cross_site(headers: &HeaderMap, secure: bool) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site")
        && site != "same-origin"
        && site != "none"
    {
        return Some(format!("Sec-Fetch-Site is {site:?}"));
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let scheme = if secure { "https" } else { "http" };
    let ours = format!("{scheme}://{host}");
    (origin.to_str().ok() != Some(&ours)).then(|| format!("its Origin {origin:?} is not {ours}"))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::from_cookies)
        .map(str::to_owned)
}

/// Lets through requests of a live session — POSTs only with its CSRF
/// token, from this origin; sends the others to sign in.
async fn guard(State(ui): State<UiState>, request: Request, next: Next) -> Response {
    let now = ui.api.clock().now();
    let id = session_id(request.headers());
    let signed = id.as_deref().and_then(|id| ui.sessions.find(id, now));
    let (Some(id), Some(signed)) = (id, signed) else {
        if request.method() == Method::GET {
            return Redirect::to("/ui/sign-in").into_response();
        }
        return forbidden("sign in to the dashboard first");
    };
    let mut request = if request.method() == Method::POST {
        if let Some(why) = cross_site(request.headers(), ui.secure) {
            return forbidden(&format!(
                "this request came from another site ({why}); nothing was changed"
            ));
        }
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
            return forbidden("this form is too large; nothing was changed");
        };
        let csrf = form(&bytes).remove("csrf").unwrap_or_default();
        if !ui.sessions.csrf_matches(&id, &csrf) {
            return forbidden(
                "this form did not come from the dashboard or is from an old session \
                 (no valid CSRF token); nothing was changed. Reload the page and try again",
            );
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        request
    };
    request.extensions_mut().insert(Current { id, signed });
    next.run(request).await
}

fn form(bytes: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(bytes).into_owned().collect()
}

async fn sign_in_page(State(ui): State<UiState>, headers: HeaderMap) -> Response {
    let now = ui.api.clock().now();
    if session_id(&headers).is_some_and(|id| ui.sessions.find(&id, now).is_some()) {
        return Redirect::to("/ui").into_response();
    }
    pages::sign_in(None).into_response()
}

/// A pause before answering a refused token, so that guessing is slow.
const REFUSAL_DELAY: Duration = Duration::from_millis(500);

async fn sign_in(State(ui): State<UiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(why) = cross_site(&headers, ui.secure) {
        return forbidden(&format!("this sign-in came from another site ({why})"));
    }
    let token = form(&body).remove("token").unwrap_or_default();
    if !ui.api.accepts(token.trim()) {
        tracing::warn!("dashboard: a sign-in with a token that is not this coordinator's");
        tokio::time::sleep(REFUSAL_DELAY).await;
        return (
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(
                "That is not this coordinator's token; nothing was signed in.",
            )),
        )
            .into_response();
    }
    let id = match ui.sessions.start(ui.api.clock().now()) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!("dashboard: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response();
        }
    };
    tracing::info!("dashboard: signed in with the API token");
    (
        [(header::SET_COOKIE, session::cookie(&id, ui.secure))],
        Redirect::to("/ui"),
    )
        .into_response()
}

async fn sign_out(State(ui): State<UiState>, Extension(current): Extension<Current>) -> Response {
    ui.sessions.end(&current.id);
    (
        [(header::SET_COOKIE, session::cleared(ui.secure))],
        Redirect::to("/ui/sign-in"),
    )
        .into_response()
}

/// A page, or the page that says why it cannot be shown.
fn shown(current: &Current, page: Result<Markup, ApiError>) -> Response {
    match page {
        Ok(page) => page.into_response(),
        Err(e) => (e.status(), pages::failure(&current.signed, e.message())).into_response(),
    }
}

async fn overview(State(ui): State<UiState>, Extension(current): Extension<Current>) -> Response {
    let now = ui.api.clock().now();
    let store = Arc::clone(ui.api.store());
    let since = now - Duration::from_secs(3600);
    let page =
        blocking(move || Ok::<_, crate::StoreError>((store.activity(since)?, store.nodes()?)))
            .await
            .map_err(ApiError::from)
            .map(|(activity, nodes)| {
                pages::overview(
                    &current.signed,
                    &pages::Overview {
                        activity,
                        nodes,
                        health: ui.api.status().report(),
                        now,
                    },
                )
            });
    shown(&current, page)
}

#[derive(serde::Deserialize)]
struct OpsQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    state: String,
}

fn nonempty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn ops(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    query: Result<Query<OpsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return shown(&current, Err(ApiError::from(e))),
    };
    let filter = pages::OpsFilter {
        kind: q.kind.trim().to_owned(),
        key: q.key.trim().to_owned(),
        state: q.state.trim().to_owned(),
    };
    let state = match nonempty(&filter.state).map(|s| s.parse::<DeliveryState>()) {
        None => None,
        Some(Ok(state)) => Some(state),
        Some(Err(why)) => {
            let page = pages::ops(
                &current.signed,
                &filter,
                &[],
                Some(&why),
                ui.api.clock().now(),
            );
            return (StatusCode::BAD_REQUEST, page).into_response();
        }
    };
    let wanted = OpFilter {
        state,
        kind: nonempty(&filter.kind),
        key: nonempty(&filter.key),
        limit: 100,
    };
    let store = Arc::clone(ui.api.store());
    let found = blocking(move || store.ops(&wanted)).await;
    let now = ui.api.clock().now();
    shown(
        &current,
        found
            .map_err(ApiError::from)
            .map(|found| pages::ops(&current.signed, &filter, &found, None, now)),
    )
}

async fn op(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return shown(
            &current,
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{id:?} is not an operation id (a number)"),
            )),
        );
    };
    let store = Arc::clone(ui.api.store());
    let found = blocking(move || {
        let (op, deliveries) = store.op(id)?;
        let attempts = store.attempts(&crate::store::AttemptsOf::Op(id))?;
        Ok::<_, crate::StoreError>((op, deliveries, attempts))
    })
    .await;
    let now = ui.api.clock().now();
    shown(
        &current,
        found
            .map_err(ApiError::from)
            .map(|(op, deliveries, attempts)| {
                pages::op(&current.signed, &op, &deliveries, &attempts, now)
            }),
    )
}

/// How many dead letters the dashboard lists.
const DEAD_SHOWN: u32 = 1000;

async fn dead(State(ui): State<UiState>, Extension(current): Extension<Current>) -> Response {
    let store = Arc::clone(ui.api.store());
    let found = blocking(move || {
        store.deliveries(&DeliveryFilter {
            state: Some(DeliveryState::Dead),
            limit: DEAD_SHOWN,
            ..DeliveryFilter::default()
        })
    })
    .await;
    let now = ui.api.clock().now();
    shown(
        &current,
        found
            .map_err(ApiError::from)
            .map(|dead| pages::dead(&current.signed, &dead, now)),
    )
}

/// What a requeue form or link names.
fn requeue_of(fields: &HashMap<String, String>) -> Result<Requeue, ApiError> {
    let number = |name: &str| {
        fields
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::new(StatusCode::BAD_REQUEST, format!("{v:?} is not a number"))
                })
            })
            .transpose()
    };
    RequeueRequest {
        delivery: number("delivery")?,
        node: fields.get("node").filter(|v| !v.is_empty()).cloned(),
        op: number("op")?,
        all: fields.get("all").is_some_and(|v| v == "true"),
    }
    .which()
}

async fn confirm_requeue(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    Query(fields): Query<HashMap<String, String>>,
) -> Response {
    let which = match requeue_of(&fields) {
        Ok(which) => which,
        Err(e) => return shown(&current, Err(e)),
    };
    let mut filter = DeliveryFilter {
        state: Some(DeliveryState::Dead),
        limit: u32::MAX,
        ..DeliveryFilter::default()
    };
    let (question, field) = match &which {
        Requeue::Delivery(id) => {
            filter.id = Some(*id);
            (
                format!("Requeue dead delivery {id}?"),
                ("delivery", id.to_string()),
            )
        }
        Requeue::Node(node) => {
            filter.node = Some(node.clone());
            (
                format!("Requeue every dead delivery to node {node}?"),
                ("node", node.clone()),
            )
        }
        Requeue::Op(op) => {
            filter.op = Some(*op);
            (
                format!("Requeue every dead delivery of operation {op}?"),
                ("op", op.to_string()),
            )
        }
        Requeue::All => (
            "Requeue every dead delivery?".to_owned(),
            ("all", "true".to_owned()),
        ),
    };
    let back = back_to(&fields, "/ui/dead");
    let store = Arc::clone(ui.api.store());
    let found = blocking(move || store.deliveries(&filter)).await;
    let page = found.map_err(ApiError::from).map(|dead| {
        pages::confirm(
            &current.signed,
            &pages::Confirm {
                title: "Requeue",
                question,
                detail: format!(
                    "{} dead now. Each starts again from its first attempt, with its failures reset.",
                    backstop_core::plural(dead.len() as u64, "delivery is", "deliveries are")
                ),
                action: "/ui/requeue".to_owned(),
                fields: vec![field, ("back", back.to_owned())],
                button: "Requeue",
                back,
                tab: Tab::Dead,
            },
        )
    });
    shown(&current, page)
}

/// The dashboard page a form or link asks to return to (`back`), else
/// `otherwise`: only a path of the dashboard, never another site.
fn back_to<'a>(fields: &'a HashMap<String, String>, otherwise: &'a str) -> &'a str {
    fields
        .get("back")
        .map(String::as_str)
        .filter(|b| {
            (*b == "/ui" || b.starts_with("/ui/"))
                && !b.contains("//")
                && !b.contains('\\')
                && b.chars().all(|c| c.is_ascii_graphic())
        })
        .unwrap_or(otherwise)
}

/// Leaves what `result` says for the next page, and goes to `back`.
fn after(
    ui: &UiState,
    current: &Current,
    result: Result<String, ApiError>,
    back: &str,
) -> Response {
    let flash = match result {
        Ok(message) => Flash {
            error: false,
            message,
        },
        Err(e) => Flash {
            error: true,
            message: e.message().to_owned(),
        },
    };
    ui.sessions.flash(&current.id, flash);
    Redirect::to(back).into_response()
}

async fn requeue(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let result = match requeue_of(&fields) {
        Ok(which) => api::requeue_dead(&ui.api, which).await.map(|n| {
            format!(
                "Requeued {}.",
                backstop_core::plural(n, "dead delivery", "dead deliveries")
            )
        }),
        Err(e) => Err(e),
    };
    after(&ui, &current, result, back_to(&fields, "/ui/dead"))
}

async fn nodes(State(ui): State<UiState>, Extension(current): Extension<Current>) -> Response {
    let store = Arc::clone(ui.api.store());
    let found = blocking(move || store.nodes()).await;
    let now = ui.api.clock().now();
    shown(
        &current,
        found
            .map_err(ApiError::from)
            .map(|nodes| pages::nodes(&current.signed, &nodes, now)),
    )
}

async fn drain(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
) -> Response {
    let result = api::set_drained(&ui.api, name, true)
        .await
        .map(|node| format!("Drained node {}: it gets no new deliveries.", node.name));
    after(&ui, &current, result, "/ui/nodes")
}

async fn undrain(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
) -> Response {
    let result = api::set_drained(&ui.api, name, false)
        .await
        .map(|node| format!("Undrained node {}: it gets deliveries again.", node.name));
    after(&ui, &current, result, "/ui/nodes")
}

async fn confirm_remove(
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
) -> Response {
    pages::confirm(
        &current.signed,
        &pages::Confirm {
            title: "Remove node",
            question: format!("Remove node {name}?"),
            detail: "It gets nothing more: its pending and dead deliveries end cancelled, \
                     its history stays. Only a node that is down, or drained with nothing \
                     in flight, can be removed; a worker that registers under its name \
                     later is a new node."
                .to_owned(),
            action: format!("/ui/nodes/{name}/remove"),
            fields: Vec::new(),
            button: "Remove",
            back: "/ui/nodes",
            tab: Tab::Nodes,
        },
    )
    .into_response()
}

async fn remove(
    State(ui): State<UiState>,
    Extension(current): Extension<Current>,
    Path(name): Path<String>,
) -> Response {
    let result = match ui.api.actor(None) {
        Ok(by) => api::remove(&ui.api, name, format!("the dashboard ({by})"))
            .await
            .map(|removed| {
                format!(
                    "Removed node {}: {} cancelled.",
                    removed.node.name,
                    backstop_core::plural(removed.cancelled, "delivery", "deliveries")
                )
            }),
        Err(e) => Err(e),
    };
    after(&ui, &current, result, "/ui/nodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn only_a_dashboard_page_is_gone_back_to() {
        let back = |b: &str| {
            let fields = HashMap::from([("back".to_owned(), b.to_owned())]);
            back_to(&fields, "/ui/dead").to_owned()
        };
        assert_eq!(back("/ui/ops/7"), "/ui/ops/7");
        assert_eq!(back("/ui"), "/ui");
        for elsewhere in [
            "https://evil.example/ui/",
            "//evil.example/ui",
            "/ui//evil.example",
            "/ui/\\evil.example",
            "/uix",
            "/v1/ops",
            "/ui/a b",
            "",
        ] {
            assert_eq!(back(elsewhere), "/ui/dead", "{elsewhere:?}");
        }
        assert_eq!(back_to(&HashMap::new(), "/ui/dead"), "/ui/dead");
    }

    #[test]
    fn a_post_from_another_origin_or_site_is_cross_site() {
        let host = ("host", "127.0.0.1:7878");
        let ours = [
            vec![host],
            vec![host, ("origin", "http://127.0.0.1:7878")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "none")],
        ];
        for h in ours {
            assert_eq!(cross_site(&headers(&h), false), None, "{h:?}");
        }
        let theirs = [
            (vec![host, ("origin", "http://evil.example")], false),
            (vec![host, ("origin", "null")], false),
            (vec![host, ("origin", "http://127.0.0.1:7878")], true),
            (vec![host, ("sec-fetch-site", "cross-site")], false),
            (vec![host, ("sec-fetch-site", "same-site")], false),
        ];
        for (h, secure) in theirs {
            assert!(cross_site(&headers(&h), secure).is_some(), "{h:?}");
        }
    }
}
