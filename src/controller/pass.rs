//! One reconcile wrapper and one retry policy for both controllers: every pass waits for
//! the caches, is timed, traced and counted in `cyberdesk_reconcile_total`, and a failed
//! one is retried with backoff per object.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::backoff::Failures;
use crate::controller::context::Shared;
use crate::controller::error::Error;

/// How a pass ended, for `cyberdesk_reconcile_total{result}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Something outside the operator must change first; looked at again later.
    Requeue,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Requeue => "requeue",
        }
    }
}

/// A controller's side of a pass: its kind, its state, and the pass itself.
pub trait Reconciler: Send + Sync + 'static {
    type Object: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static;
    /// The `operation` a whole pass is timed as.
    const OPERATION: &'static str;
    /// A failed pass is retried after `RETRY_MIN`, doubling up to `RETRY_MAX`.
    const RETRY_MIN: Duration;
    const RETRY_MAX: Duration;

    fn shared(&self) -> &Shared;
    /// Consecutive failures per object, for the backoff.
    fn failures(&self) -> &Failures<ObjectRef<Self::Object>>;
    /// The span a pass over `object` runs in.
    fn span(object: &Self::Object, ns: &str) -> tracing::Span;
    /// Logs a failed pass (each controller names its object in its own field).
    fn retrying(object: &Self::Object, error: &Error, attempts: u32, delay: Duration);
    /// One pass over `object`, which has a namespace and whose caches are filled.
    fn pass(
        &self,
        object: &Self::Object,
        ns: &str,
    ) -> impl Future<Output = Result<(Action, Outcome), Error>> + Send;
}

pub async fn reconcile<R: Reconciler>(
    object: Arc<R::Object>,
    ctx: Arc<R>,
) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = object.namespace().unwrap_or_default();
    let result = async {
        ctx.shared()
            .caches
            .wait_filled()
            .await
            .map_err(|_| Error::CachesGone)?;
        if ns.is_empty() {
            return Err(Error::NoNamespace);
        }
        ctx.pass(&object, &ns).await
    }
    .instrument(R::span(&object, &ns))
    .await;
    let result = ctx.shared().time(R::OPERATION, start, result);
    // The one place passes are counted, the desk controller's and the pool controller's.
    let label = match &result {
        Ok((_, outcome)) => outcome.as_str(),
        Err(_) => "error",
    };
    ctx.shared()
        .metrics
        .reconcile_total
        .with_label_values(&[label])
        .inc();
    let (action, _) = result?;
    ctx.failures().clear(&ObjectRef::from(object.as_ref()));
    Ok(action)
}

/// Requeues a failed pass with exponential backoff per object.
pub fn error_policy<R: Reconciler>(object: Arc<R::Object>, error: &Error, ctx: Arc<R>) -> Action {
    ctx.shared()
        .metrics
        .reconcile_errors
        .with_label_values(&[error.metric_label()])
        .inc();
    let attempts = ctx.failures().record(ObjectRef::from(object.as_ref()));
    let delay = crate::backoff::nth_delay(R::RETRY_MIN, R::RETRY_MAX, attempts);
    R::retrying(&object, error, attempts, delay);
    Action::requeue(delay)
}

#[cfg(test)]
mod tests;
