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
mod tests;
