//! What the queue keeps: nodes, operations, and one delivery per
//! (operation, node), with the states a delivery moves through and the
//! token that names each attempt.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The longest name, type, kind or key accepted.
pub const MAX_NAME: usize = 128;
/// The longest operation key accepted.
pub const MAX_KEY: usize = 512;
/// The largest payload accepted, as JSON text.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// The longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// How long a submission's idempotency key is remembered, at least: a
/// repeat within this time answers the operation the first one created.
pub const IDEMPOTENCY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Input the queue refuses, before anything is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// A name, type or kind that is empty, too long or has characters
    /// outside `A-Z a-z 0-9 _ -` (nodes and kinds become NATS subjects).
    #[error("{what} {value:?} is not valid: use 1 to {MAX_NAME} letters, digits, '_' or '-'")]
    Name {
        /// "node name", "node type", "kind".
        what: &'static str,
        /// The value, shortened.
        value: String,
    },
    /// An empty or over-long key.
    #[error(
        "an operation key must not be empty, longer than {MAX_KEY} characters, or hold control characters"
    )]
    Key,
    /// An idempotency key that is empty, too long, or not printable ASCII.
    #[error(
        "an Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters, without spaces"
    )]
    IdempotencyKey,
    /// A payload over [`MAX_PAYLOAD`].
    #[error("the payload is {0} bytes; at most {MAX_PAYLOAD} are accepted")]
    Payload(usize),
    /// A target naming no node.
    #[error("name at least one node, or a node type")]
    NoTarget,
    /// A node that handles nothing.
    #[error("node {0} declares no kind of operation it handles")]
    NoKinds(String),
    /// A setting of an operation or a kind out of its bounds.
    #[error("{name} {value} is out of bounds: {bounds}")]
    Setting {
        /// "timeout", "max_failures", "base_delay", "max_delay".
        name: &'static str,
        /// The value, as given.
        value: String,
        /// What is accepted.
        bounds: String,
    },
    /// Who is named as having done something (`by`): empty, too long,
    /// with control characters, or looking like a credential (shown
    /// redacted).
    #[error(
        "{0:?} cannot name who did this: use 1 to {MAX_NAME} printable characters, and never a \
         token or password"
    )]
    Actor(String),
}

/// Checks the name of who asks for a change (a cancellation, a removal),
/// kept with it and shown to every operator: printable, at most
/// [`MAX_NAME`] characters, and nothing [`backstop_core::redact`] takes
/// for a credential.
pub fn check_actor(by: &str) -> Result<(), Invalid> {
    let ok = !by.trim().is_empty()
        && by.trim() == by
        && by.chars().count() <= MAX_NAME
        && !by.chars().any(char::is_control)
        && backstop_core::redact(by, &[]) == by;
    if ok {
        Ok(())
    } else {
        // Never the value itself: it may be the credential it looks like.
        Err(Invalid::Actor(
            backstop_core::redact(by, &[])
                .chars()
                .take(MAX_NAME)
                .collect(),
        ))
    }
}

/// The SHA-256 of `bytes`, in hex: what a request or a declaration is,
/// to compare with what it was.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks an operation key: not blank, at most [`MAX_KEY`] characters,
/// no control character.
pub fn check_key(key: &str) -> Result<(), Invalid> {
    if key.trim().is_empty() || key.chars().count() > MAX_KEY || key.chars().any(char::is_control) {
        return Err(Invalid::Key);
    }
    Ok(())
}

/// Checks a node name, node type or kind.
pub fn check_name(what: &'static str, value: &str) -> Result<(), Invalid> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Invalid::Name {
            what,
            value: value.chars().take(MAX_NAME + 8).collect(),
        })
    }
}

/// A node's health as the coordinator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Heartbeats arrive (or the node lives inside the coordinator).
    Healthy,
    /// Its heartbeats stopped; deliveries wait for it without spending
    /// attempts.
    Unhealthy,
    /// A delivery could not reach it (no responder, or the connection was
    /// lost before its handler started). It stays parked until a heartbeat
    /// over the same transport proves it back.
    Unreachable,
}

impl NodeStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Healthy => "healthy",
            NodeStatus::Unhealthy => "unhealthy",
            NodeStatus::Unreachable => "unreachable",
        }
    }
}

impl FromStr for NodeStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "healthy" => Ok(NodeStatus::Healthy),
            "unhealthy" => Ok(NodeStatus::Unhealthy),
            "unreachable" => Ok(NodeStatus::Unreachable),
            _ => Err(()),
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the coordinator reaches a node.
pub mod transport_name {
    /// Inside the coordinator: handlers from `backstop.toml`.
    pub const LOCAL: &str = "local";
    /// A `backstop worker` over NATS request/reply.
    pub const NATS: &str = "nats";
}

/// A node as it declares itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique name.
    pub name: String,
    /// Its type: operations target every node of a type.
    pub node_type: String,
    /// The kinds of operation it handles; it never gets any other.
    pub kinds: Vec<String>,
    /// How many deliveries it runs at once (at least 1).
    pub capacity: u32,
    /// How it is reached ([`transport_name`]).
    pub transport: String,
    /// Identifies the process behind the node: a new session means a
    /// restarted worker, whose deliveries in flight died with the old one.
    pub session: String,
    /// For a node declared in a file (`backstop.toml`), a fingerprint of
    /// its declaration: a node an operator removed is registered again
    /// from the file only once its declaration differs from the one it
    /// was removed with ([`crate::Store::remove_node`]).
    pub declaration: Option<String>,
}

impl NodeSpec {
    /// Checks names and kinds; sorts and dedups the kinds.
    pub fn validate(mut self) -> Result<NodeSpec, Invalid> {
        check_name("node name", &self.name)?;
        check_name("node type", &self.node_type)?;
        for kind in &self.kinds {
            check_name("kind", kind)?;
        }
        self.kinds.sort();
        self.kinds.dedup();
        if self.kinds.is_empty() {
            return Err(Invalid::NoKinds(self.name));
        }
        self.capacity = self.capacity.max(1);
        Ok(self)
    }
}

/// A node as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Node {
    /// Unique name.
    pub name: String,
    /// Its type.
    pub node_type: String,
    /// The kinds it handles, sorted.
    pub kinds: Vec<String>,
    /// Deliveries it runs at once.
    pub capacity: u32,
    /// How it is reached.
    pub transport: String,
    /// Its health.
    pub status: NodeStatus,
    /// Drained by an operator: it gets no new deliveries until undrained.
    pub drained: bool,
    /// Its last heartbeat (never, for nodes inside the coordinator).
    #[serde(with = "opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_heartbeat: Option<SystemTime>,
    /// Deliveries to it now in flight.
    pub in_flight: u64,
    /// Deliveries to it waiting.
    pub pending: u64,
    /// Dead deliveries to it.
    pub dead: u64,
    /// When it first registered.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub registered: SystemTime,
    /// Last change.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated: SystemTime,
    /// The process behind it now ([`NodeSpec::session`]); kept out of the
    /// API, so that it cannot be used to answer for the node.
    #[serde(skip)]
    pub session: String,
}

/// The id of an operation.
pub type OpId = i64;
/// The id of a delivery.
pub type DeliveryId = i64;

/// Which nodes an operation is for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every node of this type that handles the kind, including nodes that
    /// join later — unless `present_only`, which limits it to the nodes
    /// registered at submit time.
    Type {
        /// The node type.
        node_type: String,
        /// Only the nodes present now.
        present_only: bool,
    },
    /// These nodes only.
    Nodes(Vec<String>),
}

/// An operation to submit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOp {
    /// What to do ("install", "delete").
    pub kind: String,
    /// Who gets it.
    pub target: Target,
    /// Desired-state key: a newer operation with the same key supersedes
    /// the older ones not yet delivered to each node.
    pub key: Option<String>,
    /// The payload as JSON text (handed to the handler on stdin).
    pub payload: String,
    /// Makes the submission idempotent: a repeat with the same key (a
    /// client retrying across a dropped connection) answers the operation
    /// the first one created, for at least [`IDEMPOTENCY_WINDOW`].
    pub idempotency_key: Option<String>,
    /// How its deliveries run, where it differs from the coordinator's
    /// defaults; kept with the operation.
    pub settings: Settings,
}

impl NewOp {
    /// An operation of `kind` for every node of `node_type`, with an empty
    /// object as payload.
    pub fn for_type(kind: impl Into<String>, node_type: impl Into<String>) -> Self {
        NewOp {
            kind: kind.into(),
            target: Target::Type {
                node_type: node_type.into(),
                present_only: false,
            },
            key: None,
            payload: "{}".to_owned(),
            idempotency_key: None,
            settings: Settings::default(),
        }
    }

    /// Sets how its deliveries run.
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = settings;
        self
    }

    /// Sets the idempotency key.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// What the submission asks for, as a SHA-256 hex digest of its kind,
    /// target, key, payload and settings (not its idempotency key): two
    /// requests with one idempotency key must have the same fingerprint.
    /// Without settings it is what it was before operations had them, so
    /// keys stored then still match.
    pub fn fingerprint(&self) -> String {
        let target = match &self.target {
            Target::Type {
                node_type,
                present_only,
            } => serde_json::json!({ "type": node_type, "present_only": present_only }),
            Target::Nodes(names) => serde_json::json!({ "nodes": names }),
        };
        let mut canonical = serde_json::json!([self.kind, target, self.key, self.payload]);
        if !self.settings.is_empty()
            && let Some(parts) = canonical.as_array_mut()
        {
            parts.push(serde_json::json!(self.settings));
        }
        sha256_hex(canonical.to_string().as_bytes())
    }

    /// Sets the desired-state key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: &serde_json::Value) -> Self {
        self.payload = payload.to_string();
        self
    }

    /// Checks names, key and payload size; dedups named nodes.
    pub fn validate(mut self) -> Result<NewOp, Invalid> {
        check_name("kind", &self.kind)?;
        match &mut self.target {
            Target::Type { node_type, .. } => check_name("node type", node_type)?,
            Target::Nodes(names) => {
                if names.is_empty() {
                    return Err(Invalid::NoTarget);
                }
                for n in names.iter() {
                    check_name("node name", n)?;
                }
                names.sort();
                names.dedup();
            }
        }
        if let Some(key) = &self.key {
            check_key(key)?;
        }
        if self.payload.len() > MAX_PAYLOAD {
            return Err(Invalid::Payload(self.payload.len()));
        }
        if let Some(key) = &self.idempotency_key
            && (key.is_empty()
                || key.len() > MAX_IDEMPOTENCY_KEY
                || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(Invalid::IdempotencyKey);
        }
        self.settings.validate()?;
        Ok(self)
    }
}

/// An operation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Op {
    /// Its id; later operations have larger ids.
    #[schema(value_type = i64)]
    pub id: OpId,
    /// What to do.
    pub kind: String,
    /// The node type it targets (none when it names nodes).
    pub node_type: Option<String>,
    /// The nodes it names, when it names them.
    pub nodes: Vec<String>,
    /// Only the nodes present at submit time.
    pub present_only: bool,
    /// Its desired-state key.
    pub key: Option<String>,
    /// The payload, JSON text.
    pub payload: String,
    /// Whether nodes that join later still receive it (not superseded, not
    /// cancelled, and targeting a type).
    pub live: bool,
    /// When it was submitted.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub created: SystemTime,
    /// How its deliveries run, where it differs from the coordinator's
    /// defaults: what the submission asked for, over the settings of its
    /// kind in the configuration of the coordinator that took it.
    #[serde(default)]
    pub settings: Settings,
    /// Who cancelled it, and when ([`crate::Store::cancel`]).
    #[serde(default)]
    pub cancelled: Option<Cancellation>,
}

/// Who ended something before its time, and when: an operation cancelled,
/// or a delivery cancelled with it or with the removal of its node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Cancellation {
    /// The name the operator's client sent (`--by`, or the fingerprint of
    /// the API token it used): never a secret ([`check_actor`]).
    pub by: String,
    /// When.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub at: SystemTime,
}

/// The shortest handler timeout an operation or a kind may set.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest handler timeout: 30 days (what a handler is ever given).
pub const MAX_TIMEOUT: Duration = Duration::from_millis(crate::handler::MAX_TIMEOUT_MS);
/// The most handler failures before a delivery is dead that may be set.
pub const MAX_FAILURES: u32 = 1000;
/// The shortest base or max delay that may be set.
pub const MIN_DELAY: Duration = Duration::from_millis(1);

/// How an operation's deliveries run, where it differs from the
/// coordinator's defaults (`backstop serve --handler-timeout`,
/// `--max-failures`, `--base-delay`, `--max-delay`). Set per kind in
/// `backstop.toml` (`[kinds.install]`) and per operation at submit; an
/// operation keeps, from its submission on, what it asked for over what
/// its kind sets ([`Settings::or`]). `None`: the coordinator's default.
///
/// Durations are written as `humantime` has them: `"90s"`, `"30m"`,
/// `"1h 30m"`.
///
/// ```
/// use std::time::Duration;
/// use backstop_queue::model::Settings;
///
/// let asked: Settings = serde_json::from_str(r#"{"max_failures": 3}"#).unwrap();
/// let kind: Settings = toml::from_str("timeout = \"30m\"\nmax_failures = 5").unwrap();
/// let op = asked.or(&kind);
/// assert_eq!(op.max_failures, Some(3));
/// assert_eq!(op.timeout, Some(Duration::from_secs(1800)));
/// assert!(op.validate().is_ok());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How long a handler may run before it is stopped ([`MIN_TIMEOUT`]
    /// to [`MAX_TIMEOUT`]).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::openapi::Duration>)]
    pub timeout: Option<Duration>,
    /// Handler failures after which a delivery is dead (1 to
    /// [`MAX_FAILURES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max_failures: Option<u32>,
    /// The ceiling of the first wait after a failure; later ones double
    /// ([`MIN_DELAY`] to [`crate::schedule::MAX_CAP`]).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::openapi::Duration>)]
    pub base_delay: Option<Duration>,
    /// The longest wait between attempts (as `base_delay`, and not shorter
    /// than it).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<crate::openapi::Duration>)]
    pub max_delay: Option<Duration>,
}

impl Settings {
    /// These settings, each one not set taken from `fallback`.
    pub fn or(self, fallback: &Settings) -> Settings {
        Settings {
            timeout: self.timeout.or(fallback.timeout),
            max_failures: self.max_failures.or(fallback.max_failures),
            base_delay: self.base_delay.or(fallback.base_delay),
            max_delay: self.max_delay.or(fallback.max_delay),
        }
    }

    /// Nothing set.
    pub fn is_empty(&self) -> bool {
        *self == Settings::default()
    }

    /// Checks each setting against its bounds, and that the base delay is
    /// not longer than the max delay when both are set.
    pub fn validate(&self) -> Result<(), Invalid> {
        let text = |d: Duration| backstop_core::HumanDuration(d).to_string();
        let check = |name, value: Option<Duration>, min, max| match value {
            Some(v) if v < min || v > max => Err(Invalid::Setting {
                name,
                value: text(v),
                bounds: format!("use {} to {}", text(min), text(max)),
            }),
            _ => Ok(()),
        };
        let cap = crate::schedule::MAX_CAP;
        check("timeout", self.timeout, MIN_TIMEOUT, MAX_TIMEOUT)?;
        check("base_delay", self.base_delay, MIN_DELAY, cap)?;
        check("max_delay", self.max_delay, MIN_DELAY, cap)?;
        if let Some(n) = self.max_failures
            && !(1..=MAX_FAILURES).contains(&n)
        {
            return Err(Invalid::Setting {
                name: "max_failures",
                value: n.to_string(),
                bounds: format!("use 1 to {MAX_FAILURES}"),
            });
        }
        if let (Some(base), Some(max)) = (self.base_delay, self.max_delay)
            && base > max
        {
            return Err(Invalid::Setting {
                name: "base_delay",
                value: text(base),
                bounds: format!("it is longer than max_delay {}", text(max)),
            });
        }
        Ok(())
    }
}

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt time, or for its node.
    Pending,
    /// An attempt is running.
    InFlight,
    /// The handler succeeded.
    Done,
    /// Its handler failed as many times as the cap allows; kept, with its
    /// last error, until requeued.
    Dead,
    /// A newer operation with the same key replaced it before it ran.
    Superseded,
    /// An operator cancelled its operation, or removed its node, before it
    /// was done; kept, with who and when ([`Delivery::cancelled`]).
    Cancelled,
}

impl DeliveryState {
    /// Every state, in display order.
    pub const ALL: [DeliveryState; 6] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Done,
        DeliveryState::Dead,
        DeliveryState::Superseded,
        DeliveryState::Cancelled,
    ];

    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Done => "done",
            DeliveryState::Dead => "dead",
            DeliveryState::Superseded => "superseded",
            DeliveryState::Cancelled => "cancelled",
        }
    }

    /// Done, dead, superseded or cancelled: nothing more happens without an
    /// operator (and only a dead one can be requeued).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Done
                | DeliveryState::Dead
                | DeliveryState::Superseded
                | DeliveryState::Cancelled
        )
    }
}

impl FromStr for DeliveryState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        DeliveryState::ALL
            .into_iter()
            .find(|st| st.as_str() == s || (s == "in-flight" && *st == DeliveryState::InFlight))
            .ok_or_else(|| {
                let all: Vec<&str> = DeliveryState::ALL.iter().map(|st| st.as_str()).collect();
                format!("{s:?} is not a delivery state ({})", all.join(", "))
            })
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one attempt of one delivery. A reply carrying an older token than
/// the delivery's current attempt is ignored, so a late reply can never
/// overwrite a newer attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token {
    /// The delivery.
    pub delivery: DeliveryId,
    /// The attempt number, from 1; it only grows, requeues included.
    pub attempt: u32,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "delivery {} attempt {}", self.delivery, self.attempt)
    }
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// Its id.
    #[schema(value_type = i64)]
    pub id: DeliveryId,
    /// The operation.
    #[schema(value_type = i64)]
    pub op: OpId,
    /// The node.
    pub node: String,
    /// The operation's kind.
    pub kind: String,
    /// The operation's key.
    pub key: Option<String>,
    /// Where it stands.
    pub state: DeliveryState,
    /// The number of the latest attempt (0 before the first), counting
    /// from its creation: the attempt token's number, which a requeue does
    /// not reset.
    pub attempt: u32,
    /// Attempts since the last requeue (all of them, when never requeued):
    /// what an operator reads after "attempts reset".
    pub attempts: u32,
    /// Handler failures counted toward the dead-letter cap; reset by a
    /// requeue.
    pub failures: u32,
    /// Tries that grew the backoff (failures and temporary failures).
    pub tries: u32,
    /// When it may next be attempted (pending).
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub next_at: SystemTime,
    /// Until when the running attempt holds it (in flight).
    #[serde(with = "opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_until: Option<SystemTime>,
    /// Why its latest attempt did not succeed, if it did not: a handler's
    /// stderr tail, or why the node could not be reached. None once done.
    pub last_error: Option<String>,
    /// For a pending delivery, what it waits for when that is its node
    /// rather than its next attempt time.
    pub held: Option<Hold>,
    /// Created.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub created: SystemTime,
    /// Last change.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub updated: SystemTime,
    /// When it became done, dead, superseded or cancelled.
    #[serde(with = "opt_time")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished: Option<SystemTime>,
    /// Who cancelled it, and when: with its operation, or with the removal
    /// of its node. Set on an attempt in flight too, which runs on: its
    /// delivery ends done if the handler succeeds, else cancelled.
    #[serde(default)]
    pub cancelled: Option<Cancellation>,
}

/// One attempt of a delivery as kept ([`crate::Store::attempts`]): how it
/// ended and what its handler printed, redacted and bounded
/// ([`crate::handler::Output`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Attempt {
    /// The delivery.
    #[schema(value_type = i64)]
    pub delivery: DeliveryId,
    /// Its operation.
    #[schema(value_type = i64)]
    pub op: OpId,
    /// The attempt's number ([`Token::attempt`]).
    pub attempt: u32,
    /// The node it ran on.
    pub node: String,
    /// How it ended ([`Outcome::name`]): `done`, `failed`, `temporary`,
    /// `released` (stopped, or handed back)...
    pub outcome: String,
    /// Its error, when it did not succeed.
    pub error: Option<String>,
    /// The end of its handler's standard output and error.
    #[serde(flatten)]
    pub output: crate::handler::Output,
    /// When its outcome was stored.
    #[serde(with = "time")]
    #[schema(value_type = String, format = DateTime)]
    pub finished: SystemTime,
}

/// Why a pending delivery waits for its node rather than for its next
/// attempt time (which may be long past).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Its node is drained: it is held until the node is undrained.
    Drained,
    /// Its node could not be reached: it waits for the node's next
    /// heartbeat.
    Unreachable,
    /// Its node's heartbeats stopped: it waits for them to resume.
    Unhealthy,
}

impl Hold {
    /// What holds a pending delivery to a node in this state, if anything;
    /// a drain, the operator's choice, is named before health.
    pub fn for_node(status: NodeStatus, drained: bool) -> Option<Hold> {
        match (drained, status) {
            (true, _) => Some(Hold::Drained),
            (false, NodeStatus::Unreachable) => Some(Hold::Unreachable),
            (false, NodeStatus::Unhealthy) => Some(Hold::Unhealthy),
            (false, NodeStatus::Healthy) => None,
        }
    }

    /// How `ops show` says it.
    pub fn describe(self) -> &'static str {
        match self {
            Hold::Drained => "held: node drained",
            Hold::Unreachable => "waiting: node unreachable",
            Hold::Unhealthy => "waiting: node unhealthy (no heartbeats)",
        }
    }
}

/// An attempt handed to the dispatcher by [`crate::Store::claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The attempt.
    pub token: Token,
    /// The operation.
    pub op: OpId,
    /// The node to deliver to.
    pub node: String,
    /// How the node is reached.
    pub transport: String,
    /// What to do.
    pub kind: String,
    /// The operation's key.
    pub key: Option<String>,
    /// JSON text.
    pub payload: String,
    /// Failures so far (before this attempt).
    pub failures: u32,
    /// Backoff tries so far.
    pub tries: u32,
    /// Until when this attempt holds the delivery.
    pub lease_until: SystemTime,
    /// The operation's settings.
    pub settings: Settings,
}

/// What one attempt came to, as a transport reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "error", rename_all = "snake_case")]
pub enum Outcome {
    /// The handler succeeded.
    Done,
    /// The handler asked to be tried later (exit 75): backoff grows, no
    /// failure counted.
    Temporary(String),
    /// The handler failed; the text is the tail of its stderr.
    Failed(String),
    /// The node could not be reached and the handler never started (no
    /// responder, connection lost first): no attempt spent, node parked.
    Unreachable(String),
    /// The node gave the attempt back without running it to the end (it is
    /// busy with an older attempt, or shutting down): no attempt spent.
    Released(String),
    /// No reply came in time. The handler may still be running, so the
    /// attempt is left in flight: a reply that comes before its lease ends
    /// still counts, and the lease's end returns it to pending without
    /// counting a failure.
    TimedOut,
}

impl Outcome {
    /// Its name on the wire and in an attempt's record: `done`,
    /// `temporary`, `failed`, `unreachable`, `released`, `timed_out`.
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Temporary(_) => "temporary",
            Outcome::Failed(_) => "failed",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::Released(_) => "released",
            Outcome::TimedOut => "timed_out",
        }
    }

    /// Its error, if it has one.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Done | Outcome::TimedOut => None,
            Outcome::Temporary(e)
            | Outcome::Failed(e)
            | Outcome::Unreachable(e)
            | Outcome::Released(e) => Some(e),
        }
    }

    /// A short description for logs.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Done => "done".to_owned(),
            Outcome::Temporary(e) => format!("temporary failure: {e}"),
            Outcome::Failed(e) => format!("failed: {e}"),
            Outcome::Unreachable(e) => format!("unreachable: {e}"),
            Outcome::Released(e) => format!("handed back: {e}"),
            Outcome::TimedOut => "no reply in time".to_owned(),
        }
    }
}

/// RFC 3339 on the wire, to the millisecond.
pub(crate) mod time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&text)
    }

    pub(super) fn parse<E: serde::de::Error>(text: &str) -> Result<SystemTime, E> {
        humantime::parse_rfc3339(text)
            .map_err(|e| E::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

/// Optional RFC 3339 on the wire.
pub(crate) mod opt_time {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        text.map(|t| super::time::parse(&t)).transpose()
    }
}

/// An optional duration on the wire and in files, as `humantime` writes
/// it: `"30m"`, `"1h 30m"`, `"250ms"`.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{t:?} is not a duration such as 90s, 30m or 1h 30m: {e}"
                ))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_safe() {
        for ok in ["gpu-1", "a", "node_7", &"x".repeat(MAX_NAME)] {
            assert!(check_name("node name", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", ">", "é", &"x".repeat(MAX_NAME + 1)] {
            assert!(
                matches!(
                    check_name("node name", bad),
                    Err(Invalid::Name {
                        what: "node name",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn ops_are_checked() {
        let op = NewOp::for_type("install", "gpu").key("llama-cpp");
        assert!(op.clone().validate().is_ok());
        assert_eq!(
            op.clone().key("  ").validate().err(),
            Some(Invalid::Key),
            "an empty key"
        );
        assert!(matches!(
            NewOp::for_type("in stall", "gpu").validate(),
            Err(Invalid::Name { what: "kind", .. })
        ));
        let mut named = NewOp::for_type("install", "gpu");
        named.target = Target::Nodes(vec![]);
        assert_eq!(named.validate().err(), Some(Invalid::NoTarget));
        let mut big = NewOp::for_type("install", "gpu");
        big.payload = "x".repeat(MAX_PAYLOAD + 1);
        assert!(matches!(big.validate(), Err(Invalid::Payload(_))));
    }

    #[test]
    fn idempotency_keys_are_checked_and_fingerprints_name_the_request() {
        let op = NewOp::for_type("install", "gpu").key("llama-cpp");
        let keyed = op
            .clone()
            .idempotency_key("0f1e2d3c4b5a69788796a5b4c3d2e1f0");
        assert!(keyed.clone().validate().is_ok());
        for bad in ["", "a b", "é", &"x".repeat(MAX_IDEMPOTENCY_KEY + 1)] {
            assert_eq!(
                op.clone().idempotency_key(bad).validate().err(),
                Some(Invalid::IdempotencyKey),
                "{bad:?}"
            );
        }
        assert_eq!(
            keyed.fingerprint(),
            op.fingerprint(),
            "the key is not the request"
        );
        let other = [
            op.clone().key("other"),
            op.clone().payload(&serde_json::json!({"backend": "vllm"})),
            NewOp::for_type("delete", "gpu").key("llama-cpp"),
            NewOp::for_type("install", "cpu").key("llama-cpp"),
        ];
        for o in other {
            assert_ne!(o.fingerprint(), op.fingerprint(), "{o:?}");
        }
    }

    #[test]
    fn a_drain_holds_before_health_and_a_healthy_node_holds_nothing() {
        let cases = [
            (NodeStatus::Healthy, false, None),
            (NodeStatus::Unreachable, false, Some(Hold::Unreachable)),
            (NodeStatus::Unhealthy, false, Some(Hold::Unhealthy)),
            (NodeStatus::Healthy, true, Some(Hold::Drained)),
            (NodeStatus::Unreachable, true, Some(Hold::Drained)),
        ];
        for (status, drained, want) in cases {
            assert_eq!(
                Hold::for_node(status, drained),
                want,
                "{status:?} {drained}"
            );
        }
        assert_eq!(Hold::Drained.describe(), "held: node drained");
        assert_eq!(Hold::Unreachable.describe(), "waiting: node unreachable");
    }

    #[test]
    fn states_round_trip() {
        for st in DeliveryState::ALL {
            assert_eq!(st.as_str().parse::<DeliveryState>(), Ok(st));
        }
        assert_eq!("in-flight".parse(), Ok(DeliveryState::InFlight));
        assert!("lost".parse::<DeliveryState>().is_err());
    }

    #[test]
    fn outcomes_on_the_wire() {
        let json = serde_json::to_string(&Outcome::Failed("boom".into())).unwrap_or_default();
        assert_eq!(json, r#"{"outcome":"failed","error":"boom"}"#);
        let back: Outcome =
            serde_json::from_str(r#"{"outcome":"done"}"#).unwrap_or(Outcome::TimedOut);
        assert_eq!(back, Outcome::Done);
    }
}
