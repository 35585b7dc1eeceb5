//! Store calls from async code: the [`Store`](crate::store::Store) trait's
//! calls block, so the dispatcher, the API, the health monitor and
//! housekeeping run them on tokio's blocking threads.

use crate::store::StoreError;

/// Runs a blocking store call off the async threads. A call that panics
/// or is cancelled is reported as a failed store call, never propagated.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(StoreError::Failed {
            component: "queue",
            location: "the queue".to_owned(),
            source: Box::new(e),
        }),
    }
}
