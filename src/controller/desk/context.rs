//! What the desk controller's passes hold beyond the shared parts: its settings, its
//! recent writes and the notifier.

use std::sync::Arc;

use kube::runtime::reflector::ObjectRef;

use crate::backoff::Failures;
use crate::controller::context::Shared;
use crate::controller::desk::own_writes::OwnWrites;
use crate::controller::desk::status_hold::StatusClock;
use crate::controller::pool::claim::PoolVms;
use crate::model::{Cyberdesk, DeskNamespaces};
use crate::notify::Notifier;

/// The desk controller's settings (from the flags).
#[derive(Clone, Debug)]
pub struct DeskSettings {
    pub default_timeout_ms: i64,
    /// Keep the previous operator's `status.cyberdesk_create` block in step.
    pub legacy_status: bool,
    /// The namespaces desks are served (and adopted) in (`--desk-namespaces`).
    pub desk_namespaces: DeskNamespaces,
}

pub struct DeskContext {
    pub shared: Arc<Shared>,
    pub settings: DeskSettings,
    /// Status writes the desk cache may not show yet.
    pub own_writes: OwnWrites,
    /// When each starting desk's status was last written (`status_hold`).
    pub status_clock: StatusClock,
    /// Tells the platform about desks, off the pass (`None`: nothing configured).
    pub notifier: Option<Notifier>,
    /// Consecutive failures per desk, for exponential backoff.
    pub failures: Failures<ObjectRef<Cyberdesk>>,
    /// The VMs pooled desks claimed, until the caches show them.
    pub pool_vms: PoolVms,
}

impl DeskContext {
    pub fn new(shared: Arc<Shared>, settings: DeskSettings, notifier: Option<Notifier>) -> Self {
        Self {
            shared,
            settings,
            own_writes: Default::default(),
            status_clock: Default::default(),
            notifier,
            failures: Default::default(),
            pool_vms: Default::default(),
        }
    }
}
