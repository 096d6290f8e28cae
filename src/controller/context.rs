//! What the desk and the pool controllers share: the client, the caches their passes read,
//! the template catalog, the metrics, the event announcer and where VMs live. Each
//! controller's own state sits in its room (`desk::DeskContext`, `pool::PoolContext`).

use std::time::Instant;

use kube::Resource;

use crate::catalog::Catalog;
use crate::controller::announcement::Announcement;
use crate::controller::cache::Caches;
use crate::events::Announcer;
use crate::metrics::Metrics;
use crate::model::Placement;

pub struct Shared {
    pub client: kube::Client,
    /// Publishes events in the background.
    pub announcer: Announcer,
    pub metrics: Metrics,
    /// The template ConfigMaps, kept current by a watch (hot reload).
    pub templates: Catalog,
    /// The trimmed desks, pools, VMs and VMIs the controllers watch; passes read these.
    pub caches: Caches,
    /// Where VMs live and how they are named.
    pub placement: Placement,
}

impl Shared {
    /// Queues an event about `object`; publishing happens off the pass.
    pub fn announce<K: Resource<DynamicType = ()>>(&self, object: &K, announcement: Announcement) {
        self.announcer
            .announce(object.object_ref(&()), announcement.event());
    }

    /// Records how long `operation` took (`cyberdesk_operation_duration_seconds`) and passes
    /// its result through.
    pub fn time<T>(&self, operation: &str, start: Instant, value: T) -> T {
        self.metrics
            .operation_duration
            .with_label_values(&[operation])
            .observe(start.elapsed().as_secs_f64());
        value
    }
}
