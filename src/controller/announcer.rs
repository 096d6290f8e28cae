//! Events leave the reconcile's critical path: a pass queues them and background lanes
//! publish them, as client-go's event broadcaster does for controller-runtime. Under load
//! an event POST takes as long as any write, and a pass at a desk's expiry should spend
//! its time on the halt, not on telling about it.
//!
//! One desk's events always go through the same lane, so they keep their order. A full
//! lane drops the event (counted in `cyberdesk_events_dropped_total`) rather than hold a
//! pass: events are best-effort in Kubernetes, the status is the record.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use prometheus::IntCounter;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Publishing lanes; each publishes one event at a time.
const LANES: usize = 8;
/// Events a lane holds before it drops new ones.
const LANE_DEPTH: usize = 512;

type Queued = (ObjectReference, Event);

/// The queueing end; cheap to share. Dropping it lets the lanes finish what they hold.
pub struct Announcer {
    lanes: Vec<mpsc::Sender<Queued>>,
    dropped: IntCounter,
}

/// The publishing end: wait on it after the last `Announcer` is gone to flush the lanes.
pub struct Lanes(Vec<JoinHandle<()>>);

impl Announcer {
    /// Starts the lanes on the current runtime.
    pub fn start(recorder: Recorder, dropped: IntCounter) -> (Self, Lanes) {
        let (senders, handles) = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_DEPTH);
                (tx, tokio::spawn(publish(recorder.clone(), rx)))
            })
            .unzip();
        (
            Self {
                lanes: senders,
                dropped,
            },
            Lanes(handles),
        )
    }

    /// Queues `event` about `about`; never waits.
    pub fn announce(&self, about: ObjectReference, event: Event) {
        let lane = &self.lanes[lane_of(&about, self.lanes.len())];
        if let Err(e) = lane.try_send((about, event)) {
            let (about, event) = match e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => q,
            };
            self.dropped.inc();
            tracing::warn!(
                reason = %event.reason,
                name = about.name.as_deref().unwrap_or_default(),
                namespace = about.namespace.as_deref().unwrap_or_default(),
                "event queue full; event dropped"
            );
        }
    }
}

impl Lanes {
    /// Waits until every queued event is published (the `Announcer` must be dropped
    /// first), or `limit` passes.
    pub async fn flush(self, limit: Duration) {
        let all = futures::future::join_all(self.0);
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::warn!(?limit, "events still queued at shutdown were not published");
        }
    }
}

/// The lane for one object: by uid when it has one, so a desk keeps its lane.
fn lane_of(about: &ObjectReference, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    about.uid.hash(&mut h);
    about.namespace.hash(&mut h);
    about.name.hash(&mut h);
    (h.finish() % lanes as u64) as usize
}

async fn publish(recorder: Recorder, mut queue: mpsc::Receiver<Queued>) {
    while let Some((about, event)) = queue.recv().await {
        if let Err(e) = recorder.publish(&event, &about).await {
            tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_lane_drops_and_counts_instead_of_waiting() {
        let (tx, _unread) = mpsc::channel(1);
        let dropped = IntCounter::new("dropped", "dropped").expect("counter");
        let announcer = Announcer {
            lanes: vec![tx],
            dropped: dropped.clone(),
        };
        let event = || Event {
            type_: kube::runtime::events::EventType::Normal,
            reason: "Ready".into(),
            note: None,
            action: "Run".into(),
            secondary: None,
        };
        announcer.announce(desk("a", "uid-a"), event());
        assert_eq!(dropped.get(), 0);
        announcer.announce(desk("a", "uid-a"), event());
        assert_eq!(dropped.get(), 1);
    }

    #[test]
    fn a_desk_keeps_its_lane_and_desks_spread_over_lanes() {
        let a = desk("a", "uid-a");
        assert_eq!(lane_of(&a, LANES), lane_of(&a.clone(), LANES));
        let used: std::collections::HashSet<usize> = (0..200)
            .map(|i| lane_of(&desk(&format!("d{i}"), &format!("uid-{i}")), LANES))
            .collect();
        assert_eq!(used.len(), LANES);
    }
}
