//! The seam through which a file's `Authorization` can change during a
//! pull: a registry's bearer token expires after minutes, a large layer's
//! download outlasts it, and every request after the expiry must carry a
//! fresh one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use backstop_core::Secret;

/// What [`Authorize::authorization`] returns.
pub type AuthorizationFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Secret>, String>> + Send + 'a>>;

/// Gives the `Authorization` value of a file's next request. Asked before
/// every request of the file (each attempt, each resumed stream), so it
/// should answer from a cache while the value it holds is good.
pub trait Authorize: Send + Sync {
    /// The whole header value (`Bearer …`, `Basic …`), or `None` to send
    /// none. An error (without any secret in it) fails that attempt as
    /// temporary; the retry engine tries again.
    fn authorization(&self) -> AuthorizationFuture<'_>;
}

/// An [`Authorize`] shared by the files it speaks for.
#[derive(Clone)]
pub struct Authorizer(Arc<dyn Authorize>);

impl Authorizer {
    /// Wraps `authorize`.
    pub fn new(authorize: impl Authorize + 'static) -> Authorizer {
        Authorizer(Arc::new(authorize))
    }

    pub(crate) async fn authorization(&self) -> Result<Option<Secret>, String> {
        self.0.authorization().await
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorizer")
    }
}
