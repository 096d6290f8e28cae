//! Events leave the reconcile's critical path: a pass queues them and background lanes
//! publish them, as client-go's event broadcaster does for controller-runtime. Under load
//! an event POST takes as long as any write, and a pass at a desk's expiry should spend
//! its time on the halt, not on telling about it.
//!
//! One desk's events always go through the same lane, so they keep their order. A full
//! lane drops the event (counted in `cyberdesk_events_dropped_total`) rather than hold a
//! pass: events are best-effort in Kubernetes, the status is the record.
//!
//! A repeat of the same event about the same object within [`SERIES_TTL`] becomes a
//! series (count and last time patched onto the first event), as kube-rs' `Recorder`
//! does. Unlike that recorder, which keeps a whole copy of every event it published for
//! six minutes, each lane remembers at most [`SERIES_MEMORY`] small entries: with
//! thousands of desks created in a few minutes that cache was half the operator's heap.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use prometheus::IntCounter;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Publishing lanes; each publishes one event at a time.
const LANES: usize = 8;
/// Events a lane holds before it drops new ones.
const LANE_DEPTH: usize = 512;
/// How long a published event can still turn into a series (kube-rs uses the same).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Published events each lane remembers for series; the oldest is forgotten first.
const SERIES_MEMORY: usize = 512;

type Queued = (ObjectReference, Event);

/// The queueing end; cheap to share. Dropping it lets the lanes finish what they hold.
#[derive(Clone)]
pub struct Announcer {
    lanes: Vec<mpsc::Sender<Queued>>,
    dropped: IntCounter,
}

/// The publishing end: wait on it after the last `Announcer` is gone to flush the lanes.
pub struct Lanes(Vec<JoinHandle<()>>);

impl Announcer {
    /// Starts the lanes on the current runtime; they publish as `reporter`.
    pub fn start(client: kube::Client, reporter: Reporter, dropped: IntCounter) -> (Self, Lanes) {
        let (senders, handles) = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_DEPTH);
                let publisher = Publisher {
                    client: client.clone(),
                    reporter: reporter.clone(),
                    seen: Seen::default(),
                };
                (tx, tokio::spawn(publish(publisher, rx)))
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

async fn publish(mut publisher: Publisher, mut queue: mpsc::Receiver<Queued>) {
    while let Some((about, event)) = queue.recv().await {
        if let Err(e) = publisher.publish(&about, &event).await {
            tracing::warn!(error = %e, reason = %event.reason, "could not publish event");
        }
    }
}

/// What makes two events the same, so that the second extends the first's series.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    about: (Option<String>, Option<String>, Option<String>),
    warning: bool,
    reason: String,
    action: String,
    note: Option<String>,
}

impl SeriesKey {
    fn of(about: &ObjectReference, event: &Event) -> Self {
        Self {
            about: (
                about.namespace.clone(),
                about.name.clone(),
                about.uid.clone(),
            ),
            warning: matches!(event.type_, EventType::Warning),
            reason: event.reason.clone(),
            action: event.action.clone(),
            note: event.note.clone(),
        }
    }
}

/// A published event, as much as a repeat needs to patch it into a series.
struct Published {
    name: String,
    count: i32,
    last: Timestamp,
}

/// The events a lane published lately, at most [`SERIES_MEMORY`] of them.
#[derive(Default)]
struct Seen(HashMap<SeriesKey, Published>);

impl Seen {
    /// The live entry for `key`, if the event was published within the TTL.
    fn get_mut(&mut self, key: &SeriesKey, now: Timestamp) -> Option<&mut Published> {
        self.0.get_mut(key).filter(|p| p.last + SERIES_TTL > now)
    }

    /// Remembers `key`, making room by forgetting expired entries, then the oldest.
    fn insert(&mut self, key: SeriesKey, published: Published, now: Timestamp) {
        if self.0.len() >= SERIES_MEMORY {
            self.0.retain(|_, p| p.last + SERIES_TTL > now);
        }
        if self.0.len() >= SERIES_MEMORY
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|(_, p)| p.last)
                .map(|(k, _)| k.clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(key, published);
    }
}

struct Publisher {
    client: kube::Client,
    reporter: Reporter,
    seen: Seen,
}

impl Publisher {
    async fn publish(&mut self, about: &ObjectReference, event: &Event) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let ns = about.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), ns);
        let key = SeriesKey::of(about, event);
        if let Some(earlier) = self.seen.get_mut(&key, now) {
            let count = earlier.count + 1;
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            let patch = json!({ "series": series });
            events
                .patch(
                    &earlier.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            earlier.count = count;
            earlier.last = now;
            return Ok(());
        }
        let first = new_event(&self.reporter, about, event, now);
        let name = first.metadata.name.clone().unwrap_or_default();
        events.create(&PostParams::default(), &first).await?;
        self.seen.insert(
            key,
            Published {
                name,
                count: 1,
                last: now,
            },
            now,
        );
        Ok(())
    }
}

/// The first event of a series, named after its object and the time.
fn new_event(
    reporter: &Reporter,
    about: &ObjectReference,
    event: &Event,
    now: Timestamp,
) -> K8sEvent {
    let object = about.name.as_deref().unwrap_or(&reporter.controller);
    K8sEvent {
        metadata: ObjectMeta {
            name: Some(format!("{object}.{:x}", now.as_nanosecond())),
            namespace: about.namespace.clone(),
            ..Default::default()
        },
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        note: event.note.clone(),
        event_time: Some(MicroTime(now)),
        regarding: Some(about.clone()),
        related: event.secondary.clone(),
        reporting_controller: Some(reporter.controller.clone()),
        reporting_instance: Some(
            reporter
                .instance
                .clone()
                .unwrap_or_else(|| reporter.controller.clone()),
        ),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        ..Default::default()
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

    fn key(name: &str) -> SeriesKey {
        let event = Event {
            type_: EventType::Warning,
            reason: "VirtualMachineConflict".into(),
            note: Some("exists".into()),
            action: "Create".into(),
            secondary: None,
        };
        SeriesKey::of(&desk(name, &format!("uid-{name}")), &event)
    }

    fn published(last: Timestamp) -> Published {
        Published {
            name: "e".into(),
            count: 1,
            last,
        }
    }

    #[test]
    fn a_repeat_within_the_ttl_extends_the_series_and_a_later_one_starts_anew() {
        let t0 = Timestamp::now();
        let mut seen = Seen::default();
        seen.insert(key("a"), published(t0), t0);
        assert!(
            seen.get_mut(&key("a"), t0 + SignedDuration::from_mins(5))
                .is_some()
        );
        assert!(seen.get_mut(&key("b"), t0).is_none());
        assert!(seen.get_mut(&key("a"), t0 + SERIES_TTL).is_none());
    }

    #[test]
    fn a_lane_remembers_a_bounded_number_of_events_and_forgets_the_oldest() {
        let t0 = Timestamp::now();
        let mut seen = Seen::default();
        for i in 0..SERIES_MEMORY + 10 {
            let at = t0 + SignedDuration::from_millis(i as i64);
            seen.insert(key(&format!("d{i}")), published(at), at);
        }
        assert_eq!(seen.0.len(), SERIES_MEMORY);
        let now = t0 + SignedDuration::from_secs(1);
        assert!(seen.get_mut(&key("d0"), now).is_none());
        assert!(
            seen.get_mut(&key(&format!("d{}", SERIES_MEMORY + 9)), now)
                .is_some()
        );
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
