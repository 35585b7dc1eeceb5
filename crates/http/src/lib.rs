//! backstop's HTTP client: reqwest (rustls) on the retry engine of
//! [`backstop_core`].
//!
//! - Retries 408, 425, 429, 500, 502, 503, 504 (and 529) and connect,
//!   timeout and reset errors; fails at once on every other 4xx; retries a
//!   request that is not idempotent only when the server cannot have acted
//!   on it, or when it carries an `Idempotency-Key`.
//! - Reads every common server wait signal ([`server_wait`]): Retry-After
//!   (seconds or date), `retry-after-ms`, the IETF `RateLimit` header,
//!   `x-ratelimit-reset` (OpenAI durations, GitHub epochs), Anthropic's
//!   reset instants and Google's `RetryInfo`.
//! - Hosts that asked to wait are left alone until then ([`HostBoard`]): a
//!   429 or 503 with a wait holds every later request to that host, in
//!   this process and, through a shared store such as the cooldown
//!   ledger, in every process that shares it. Nothing is sent to a host
//!   cooling down; the retry engine waits it out like a `Retry-After`.
//! - Connect, response-header and read-idle timeouts always on.
//! - Credentials never reach a message: sensitive headers are marked,
//!   server messages are scrubbed, URLs are shown without query or
//!   password.
//!
//! ```no_run
//! # async fn demo() -> Result<(), backstop_http::Error> {
//! use backstop_http::Client;
//!
//! let client = Client::new()?;
//! let models: serde_json::Value = client
//!     .get("https://huggingface.co/api/models?limit=3")
//!     .json()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Everything needed to tune it is re-exported here, so an embedder does not
//! depend on `backstop_core` itself: the presets ([`Policy::api`], the
//! default, and [`Policy::transfer`]), [`Jitter`], a [`RetryBudget`] shared
//! by every request, the endings a caller matches on.
//!
//! ```no_run
//! # async fn demo() -> Result<(), backstop_http::Error> {
//! use std::{sync::Arc, time::Duration};
//! use backstop_http::{Client, Jitter, Policy, RetryBudget};
//!
//! let client = Client::builder()
//!     .policy(Policy::api().with_max_attempts(3).with_jitter(Jitter::Full))
//!     .budget(Arc::new(RetryBudget::default()))
//!     .build()?;
//! // A slow listing gets more time; a large file belongs to `backstop_transfer`.
//! let info: serde_json::Value = client
//!     .get("https://huggingface.co/api/models/gpt2")
//!     .policy(Policy::api().with_deadline(Duration::from_secs(600)))
//!     .json()
//!     .await?;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod client;
mod error;
mod failure;
mod hosts;
mod payload;
mod request;
mod wait_headers;

pub use backstop_core::hosts::{HostCooldowns, HostRefusal, HostsError};
pub use backstop_core::{
    Attempt, AttemptError, Class, Classified, Ending, Jitter, Policy, RetryBudget, RetryError,
    RetryEvent, Secret, Verdict,
};
pub use client::{CONNECT_TIMEOUT, Client, ClientBuilder, HEADER_TIMEOUT, READ_IDLE_TIMEOUT};
pub use error::Error;
pub use failure::HttpFailure;
pub use hosts::{Cooling, HostBoard, Look, SHARED_TIMEOUT};
pub use payload::{FileBody, Payload};
pub use request::{Body, MAX_BODY, Prepared, RequestBuilder, Saved, display_host, redact_url};
pub use reqwest::{Method, Response, StatusCode, header};
pub use tokio_util::sync::CancellationToken;
pub use wait_headers::{server_wait, spent_quota};
