//! What the pool controller's passes hold beyond the shared parts.

use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use crate::backoff::Failures;
use crate::controller::context::Shared;
use crate::controller::pool::writes::PoolWrites;
use crate::model::CyberdeskPool;

pub struct PoolContext {
    pub shared: Arc<Shared>,
    /// Consecutive failures per warm pool, for exponential backoff.
    pub failures: Failures<ObjectRef<CyberdeskPool>>,
    /// VMs this controller created or deleted, until the cache shows it.
    pub writes: PoolWrites,
}

impl PoolContext {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            failures: Default::default(),
            writes: Default::default(),
        }
    }
}
