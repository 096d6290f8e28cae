//! The notifier: queues deliveries per desk, makes them on tasks of their own (bounded in
//! number), and records how they ended in the desk's status with a merge patch of its own
//! field manager, which the reconciler's server-side applies never touch.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hyper::Method;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::events::Announcer;
use crate::metrics::Metrics;
use crate::model::{Cyberdesk, Delivery, DeliveryOutcome};
use crate::notify::http::{HttpClient, Outgoing, SendError};
use crate::notify::ready::ReadyUrl;
use crate::notify::retry::{RetryPolicy, delivered};
use crate::notify::supabase::Supabase;
use crate::time;

/// Field manager of the notifier's status records.
const FIELD_MANAGER: &str = "cyberdesk-operator-notifier";
/// Deliveries in flight at once; more wait for a slot.
const MAX_IN_FLIGHT: usize = 32;

#[derive(Clone, Debug)]
pub struct NotifierConfig {
    pub ready_url: Option<ReadyUrl>,
    /// The platform's state table, when SUPABASE_URL and SUPABASE_KEY are set.
    pub supabase: Option<Supabase>,
    pub retry: RetryPolicy,
    /// Longest time one attempt may take.
    pub attempt_timeout: std::time::Duration,
    /// Only desks of these namespaces are told about (`--desk-namespaces`).
    pub namespaces: crate::model::DeskNamespaces,
}

impl NotifierConfig {
    /// Is there anything to deliver at all?
    pub fn any(&self) -> bool {
        self.ready_url.is_some() || self.supabase.is_some()
    }
}

/// Cheap to clone; every clone queues into the same notifier.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    client: kube::Client,
    http: HttpClient,
    cfg: NotifierConfig,
    desks: Store<Cyberdesk>,
    metrics: Metrics,
    announcer: Announcer,
    /// Desks (by uid) whose ready call is in flight, or ended in this process and not yet
    /// seen recorded: never queued twice, even while the desk cache lags the record.
    ready_taken: Mutex<HashSet<String>>,
    /// The platform state per desk (by uid) that this process is writing or wrote.
    states: Mutex<HashMap<String, StateSlot>>,
    slots: Semaphore,
    stop: CancellationToken,
}

/// The platform state of one desk as this process handles it.
#[derive(Debug)]
struct StateSlot {
    /// Being written (`writing`), or written or given up.
    value: &'static str,
    writing: bool,
    /// Asked for while `value` was being written: written next (the latest wins).
    next: Option<&'static str>,
}

/// Why a delivery failed, for the log and the give-up event (never a header value).
fn failure(result: &Result<u16, SendError>) -> String {
    match result {
        Ok(code) => format!("HTTP {code}"),
        Err(e) => e.to_string(),
    }
}

impl Notifier {
    pub fn new(
        client: kube::Client,
        http: HttpClient,
        cfg: NotifierConfig,
        desks: Store<Cyberdesk>,
        metrics: Metrics,
        announcer: Announcer,
        stop: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                http,
                cfg,
                desks,
                metrics,
                announcer,
                ready_taken: Mutex::default(),
                states: Mutex::default(),
                slots: Semaphore::new(MAX_IN_FLIGHT),
                stop,
            }),
        }
    }

    /// Is there a ready URL to call?
    pub fn calls_ready(&self) -> bool {
        self.inner.cfg.ready_url.is_some()
    }

    /// Queues the ready call for `desk`, unless it is in flight or ended in this process.
    pub fn ready(&self, desk: &Cyberdesk) {
        let (Some(url), Some(uid), Some(ns)) = (
            self.inner.cfg.ready_url.as_ref(),
            desk.uid(),
            desk.namespace(),
        ) else {
            return;
        };
        if !self.inner.cfg.namespaces.serves(&ns) {
            return;
        }
        let fresh = self
            .inner
            .ready_taken
            .lock()
            .is_ok_and(|mut taken| taken.insert(uid.clone()));
        if !fresh {
            return;
        }
        let name = desk.name_any();
        let url = url.for_desk(&ns, &name);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let desk = ObjectRef::new(&name).within(&ns);
            let request = Outgoing {
                method: Method::POST,
                url,
                headers: Vec::new(),
                body: Vec::new(),
            };
            inner.deliver_ready(desk, uid, request).await;
        });
    }

    /// Is the platform's state table written?
    pub fn syncs_state(&self) -> bool {
        self.inner.cfg.supabase.is_some()
    }

    /// Writes `state` as the desk's platform state, unless this process is writing or
    /// wrote that very value. While another value is being written, `state` follows it.
    pub fn platform_state(&self, desk: &Cyberdesk, state: &'static str) {
        let (Some(supabase), Some(uid), Some(ns)) = (
            self.inner.cfg.supabase.clone(),
            desk.uid(),
            desk.namespace(),
        ) else {
            return;
        };
        if !self.inner.cfg.namespaces.serves(&ns) {
            return;
        }
        let Ok(mut states) = self.inner.states.lock() else {
            return;
        };
        match states.get_mut(&uid) {
            Some(slot) if slot.writing => {
                slot.next = (slot.value != state).then_some(state);
                return;
            }
            Some(slot) if slot.value == state => return,
            _ => {}
        }
        states.insert(
            uid.clone(),
            StateSlot {
                value: state,
                writing: true,
                next: None,
            },
        );
        drop(states);
        let inner = self.inner.clone();
        let desk = ObjectRef::new(&desk.name_any()).within(&ns);
        tokio::spawn(async move { inner.write_states(desk, uid, supabase, state).await });
    }

    /// The desk's stored status holds `state` as its platform state: its memory here can
    /// go, unless a write is under way.
    pub fn platform_state_recorded(&self, uid: &str, state: &str) {
        if let Ok(mut states) = self.inner.states.lock()
            && states
                .get(uid)
                .is_some_and(|slot| !slot.writing && slot.value == state)
        {
            states.remove(uid);
        }
    }

    /// The desk is gone: forget it.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut taken) = self.inner.ready_taken.lock() {
            taken.remove(uid);
        }
        if let Ok(mut states) = self.inner.states.lock()
            && states.get(uid).is_some_and(|slot| !slot.writing)
        {
            states.remove(uid);
        }
    }

    /// The desk's stored status holds its ready record: its memory here can go.
    pub fn ready_recorded(&self, uid: &str) {
        if let Ok(mut taken) = self.inner.ready_taken.lock() {
            taken.remove(uid);
        }
    }
}

impl Inner {
    /// Is the desk still there, the same one (a deleted and recreated desk is another)?
    fn still_there(&self, desk: &ObjectRef<Cyberdesk>, uid: &str) -> bool {
        self.desks
            .get(desk)
            .is_some_and(|d| d.uid().as_deref() == Some(uid))
    }

    async fn deliver_ready(&self, desk: ObjectRef<Cyberdesk>, uid: String, request: Outgoing) {
        let Ok(_slot) = self.slots.acquire().await else {
            return;
        };
        let ended = self
            .attempt(&desk, "ready", &request, || self.still_there(&desk, &uid))
            .await;
        let Some((outcome, made, why)) = ended else {
            return;
        };
        if outcome == DeliveryOutcome::GaveUp {
            self.give_up(
                &desk,
                &uid,
                "ReadyNotificationFailed",
                &format!("the ready call failed {made} times (last: {why}); gave up"),
            );
        }
        self.record(&desk, "ready", outcome, None, made).await;
    }

    /// Writes the desk's platform state, then whatever value was asked for meanwhile. A
    /// desk deleted meanwhile still gets its last state written: the platform must learn
    /// of its end.
    async fn write_states(
        &self,
        desk: ObjectRef<Cyberdesk>,
        uid: String,
        supabase: Supabase,
        first: &'static str,
    ) {
        let Ok(_slot) = self.slots.acquire().await else {
            return;
        };
        let mut state = first;
        loop {
            let request = supabase.request(&desk.name, state);
            let ended = self
                .attempt(&desk, "platform_state", &request, || true)
                .await;
            if let Some((outcome, made, why)) = ended {
                if outcome == DeliveryOutcome::GaveUp {
                    self.give_up(&desk, &uid, "PlatformStateFailed", &format!(
                        "writing platform state {state} failed {made} times (last: {why}); gave up"
                    ));
                }
                self.record(
                    &desk,
                    "platformState",
                    outcome,
                    Some(state.to_string()),
                    made,
                )
                .await;
            }
            let Ok(mut states) = self.states.lock() else {
                return;
            };
            let Some(slot) = states.get_mut(&uid) else {
                return;
            };
            match slot.next.take() {
                Some(next) => {
                    slot.value = next;
                    state = next;
                }
                None => {
                    slot.writing = false;
                    return;
                }
            }
        }
    }

    /// Sends `request` until it is delivered or the attempts run out: the outcome, the
    /// attempts made and the last failure. `None` when stopped (shutdown, or `go_on`
    /// said no before a retry): nothing is recorded then.
    async fn attempt(
        &self,
        desk: &ObjectRef<Cyberdesk>,
        sink: &str,
        request: &Outgoing,
        go_on: impl Fn() -> bool,
    ) -> Option<(DeliveryOutcome, u32, String)> {
        let counter = |result: &str| {
            self.metrics
                .notifications
                .with_label_values(&[sink, result])
                .inc();
        };
        let name = &desk.name;
        let ns = desk.namespace.as_deref().unwrap_or_default();
        let mut made = 0;
        loop {
            made += 1;
            let result = self.http.send(request).await;
            if matches!(result, Ok(code) if delivered(code)) {
                counter("delivered");
                tracing::info!(cyberdesk = %name, namespace = %ns, sink, attempts = made, "notification delivered");
                return Some((DeliveryOutcome::Delivered, made, String::new()));
            }
            let why = failure(&result);
            let Some(wait) = self.cfg.retry.delay_after(made) else {
                counter("gave_up");
                tracing::warn!(cyberdesk = %name, namespace = %ns, sink, attempts = made, last = %why, "notification failed; giving up");
                return Some((DeliveryOutcome::GaveUp, made, why));
            };
            counter("retried");
            tracing::warn!(cyberdesk = %name, namespace = %ns, sink, attempts = made, last = %why, retry_in = ?wait, "notification failed; retrying");
            tokio::select! {
                // No record: the next leader delivers it.
                _ = self.stop.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            if !go_on() {
                return None;
            }
        }
    }

    /// A Warning event on the desk, if it is still the same desk.
    fn give_up(&self, desk: &ObjectRef<Cyberdesk>, uid: &str, reason: &str, note: &str) {
        let Some(stored) = self.desks.get(desk) else {
            return;
        };
        if stored.uid().as_deref() != Some(uid) {
            return;
        }
        self.announcer.announce(
            stored.object_ref(&()),
            Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note.into()),
                action: "Notify".into(),
                secondary: None,
            },
        );
    }

    /// Writes `status.notifications.<kind>`. A desk gone meanwhile needs no record.
    async fn record(
        &self,
        desk: &ObjectRef<Cyberdesk>,
        kind: &str,
        outcome: DeliveryOutcome,
        value: Option<String>,
        attempts: u32,
    ) {
        let ns = desk.namespace.as_deref().unwrap_or_default();
        let api: Api<Cyberdesk> = Api::namespaced(self.client.clone(), ns);
        let delivery = Delivery {
            outcome,
            value,
            attempts,
            time: time::format(Timestamp::now()),
        };
        let patch = json!({"status": {"notifications": {kind: delivery}}});
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api
            .patch_status(&desk.name, &params, &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(cyberdesk = %desk.name, namespace = %ns, error = %e, "could not record the {kind} delivery; it is not made again by this replica")
            }
        }
    }
}

#[cfg(test)]
mod tests;
