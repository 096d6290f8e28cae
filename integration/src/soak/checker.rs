//! The independent checker: its own watches on desks and VMs (plain JSON, none of the
//! operator's types or code), filling the [`History`] the invariants are judged on.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;

use super::history::{DeskRecord, History, Ms, VmRecord, parse_ms};
use crate::desks::now_ms;

/// The history, shared by the watches, the workload, the fault injector and the report.
#[derive(Clone, Default)]
pub struct Checker {
    history: Arc<Mutex<History>>,
}

/// The Cyberdesk API as plain JSON (the checker and the workload read no operator types).
pub(super) fn desk_resource() -> ApiResource {
    ApiResource {
        group: "cyberdesk.io".into(),
        version: "v1alpha1".into(),
        api_version: "cyberdesk.io/v1alpha1".into(),
        kind: "Cyberdesk".into(),
        plural: "cyberdesks".into(),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

impl Checker {
    pub fn history(&self) -> MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts both watches in `namespace`.
    pub fn watch(&self, client: &kube::Client, namespace: &str) {
        let desks: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &desk_resource());
        let vms: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), namespace, &crate::kubevirt::vm_resource());
        tokio::spawn(self.clone().follow(desks, Kind::Desk));
        tokio::spawn(self.clone().follow(vms, Kind::Vm));
    }

    async fn follow(self, api: Api<DynamicObject>, kind: Kind) {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        // What a (re)list returned: anything known and absent from it went away meanwhile.
        let mut listed: Option<HashSet<String>> = None;
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let now = now_ms();
            match event {
                Event::Init => listed = Some(HashSet::new()),
                Event::InitApply(obj) => {
                    if let (Some(set), Some(uid)) = (listed.as_mut(), obj.metadata.uid.clone()) {
                        set.insert(uid);
                    }
                    self.seen(kind, &obj, now);
                }
                Event::InitDone => {
                    if let Some(set) = listed.take() {
                        self.gone_unless(kind, &set, now);
                    }
                }
                Event::Apply(obj) => self.seen(kind, &obj, now),
                Event::Delete(obj) => {
                    if let Some(uid) = obj.metadata.uid.as_deref() {
                        self.gone(kind, uid, now);
                    }
                }
            }
        }
    }

    fn seen(&self, kind: Kind, obj: &DynamicObject, now: Ms) {
        match kind {
            Kind::Desk => self.desk_seen(obj, now),
            Kind::Vm => self.vm_seen(obj, now),
        }
    }

    fn desk_seen(&self, obj: &DynamicObject, now: Ms) {
        let Some(uid) = obj.metadata.uid.clone() else {
            return;
        };
        let mut h = self.history();
        let d = h.desks.entry(uid).or_insert_with(|| DeskRecord {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            first_seen: now,
            phase_since: now,
            ..Default::default()
        });
        let data = &obj.data;
        d.delete_action = str_at(data, &["spec", "timeoutAction"]) == Some("Delete");
        d.pooled = str_at(data, &["spec", "pool"]).is_some();
        if let Some(e) = str_at(data, &["status", "expiryTime"]).and_then(parse_ms) {
            d.expiry = Some(e);
        }
        let phase = str_at(data, &["status", "phase"]).unwrap_or("").to_string();
        if phase != d.phase {
            d.phase = phase;
            d.phase_since = now;
        }
        if d.phase == "Running" && d.running_at.is_none() {
            d.running_at = Some(now);
        }
        if d.phase == "TimedOut" && d.timed_out_at.is_none() {
            d.timed_out_at = Some(now);
        }
        if obj.metadata.deletion_timestamp.is_some() && d.deletion_seen.is_none() {
            d.deletion_seen = Some(now);
        }
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        h.desk_halt_seen(&uid, now);
    }

    fn vm_seen(&self, obj: &DynamicObject, now: Ms) {
        let Some(uid) = obj.metadata.uid.clone() else {
            return;
        };
        let owners = obj.metadata.owner_references.clone().unwrap_or_default();
        let desk = owners
            .iter()
            .find(|o| o.kind == "Cyberdesk")
            .map(|o| o.uid.clone());
        let pool_owned = desk.is_none() && owners.iter().any(|o| o.kind == "CyberdeskPool");
        let halted = str_at(&obj.data, &["spec", "runStrategy"]) == Some("Halted")
            || obj.data.pointer("/spec/running") == Some(&Value::Bool(false));
        let mut h = self.history();
        let vm = h.vms.entry(uid).or_insert_with(|| VmRecord {
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
            name: obj.metadata.name.clone().unwrap_or_default(),
            first_seen: now,
            ..Default::default()
        });
        vm.pool_owned = pool_owned;
        vm.halted = halted;
        if let Some(d) = &desk
            && vm.desks.last() != Some(d)
        {
            vm.desks.push(d.clone());
        }
        if halted && let Some(d) = desk {
            mark_halted(&mut h, &d, now);
        }
    }

    fn gone(&self, kind: Kind, uid: &str, now: Ms) {
        let mut h = self.history();
        match kind {
            Kind::Desk => {
                if let Some(d) = h.desks.get_mut(uid) {
                    d.gone.get_or_insert(now);
                    if d.halted_at.is_none() && d.expiry.is_some_and(|e| e <= now + 1_000) {
                        d.halted_at = Some(now);
                    }
                }
            }
            Kind::Vm => {
                let desk = h.vms.get_mut(uid).and_then(|vm| {
                    vm.gone.get_or_insert(now);
                    vm.desks.last().cloned()
                });
                if let Some(d) = desk {
                    mark_halted(&mut h, &d, now);
                }
            }
        }
    }

    fn gone_unless(&self, kind: Kind, listed: &HashSet<String>, now: Ms) {
        let missing: Vec<String> = {
            let h = self.history();
            match kind {
                Kind::Desk => h
                    .desks
                    .iter()
                    .filter(|(uid, d)| d.gone.is_none() && !listed.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect(),
                Kind::Vm => h
                    .vms
                    .iter()
                    .filter(|(uid, v)| v.gone.is_none() && !listed.contains(*uid))
                    .map(|(uid, _)| uid.clone())
                    .collect(),
            }
        };
        for uid in missing {
            self.gone(kind, &uid, now);
        }
    }
}

/// The desk's VM halted or went away: the timeout is enforced if the desk had expired.
fn mark_halted(h: &mut History, desk_uid: &str, now: Ms) {
    if let Some(d) = h.desks.get_mut(desk_uid)
        && d.halted_at.is_none()
        && d.expiry.is_some_and(|e| e <= now + 1_000)
    {
        d.halted_at = Some(now);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Desk,
    Vm,
}
