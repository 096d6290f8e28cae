//! The workload: desks created and deleted continuously through the API as users and the
//! platform would (mixed timeouts, Stop and Delete, some pooled, some with user data),
//! some extended or shortened while running, some VMs deleted by hand, the template
//! broken and fixed. Every refusal is retried as a client would and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use super::checker::Checker;
use super::history::Ms;
use crate::desks::now_ms;

pub const POOL: &str = "soak-pool";
pub const USER_DATA_SECRET: &str = "soak-user-data";
/// The template ConfigMap the operator reads by default (`--template-configmap`).
const TEMPLATE_CONFIGMAP: &str = "cyberdesk-vm-template";

/// What the workload did, for the report.
#[derive(Debug, Default)]
pub struct Tally {
    pub created: AtomicU64,
    pub refused: AtomicU64,
    pub deleted: AtomicU64,
    pub retimed: AtomicU64,
    pub vms_deleted_by_hand: AtomicU64,
    pub template_breaks: AtomicU64,
}

#[derive(Clone)]
pub struct Workload {
    pub client: kube::Client,
    pub namespace: String,
    pub target: usize,
    pub checker: Checker,
    pub tally: Arc<Tally>,
    /// The next desk number: the fault injector reads it to hold the next VMIs' starts.
    pub next: Arc<AtomicU64>,
    pub stop: Arc<AtomicBool>,
    pub rng_seed: u64,
}

/// A desk the workload created and has not yet seen gone.
#[derive(Clone, Debug)]
struct Own {
    name: String,
    timeout_ms: i64,
}

fn desk_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &super::checker::desk_resource())
}

/// Timeouts from 10 s to 10 min, most of them short so that a short run sees many expire.
fn draw_timeout(rng: &mut fastrand::Rng) -> i64 {
    match rng.u8(0..10) {
        0..=5 => rng.i64(10_000..=60_000),
        6..=8 => rng.i64(60_000..=180_000),
        _ => rng.i64(180_000..=600_000),
    }
}

impl Workload {
    /// Runs until `stop` is set.
    pub async fn run(self) {
        let mut rng = fastrand::Rng::with_seed(self.rng_seed);
        let desks = desk_api(&self.client, &self.namespace);
        let mut own: BTreeMap<String, Own> = BTreeMap::new();
        let begun = std::time::Instant::now();
        let mut due = Due::default();
        while !self.stop.load(Ordering::Relaxed) {
            let t = begun.elapsed();
            self.forget_gone(&mut own);
            // Up to 10 creates a tick (~20/s): fast enough to refill, gentle on 2 cores.
            for _ in 0..10 {
                if own.len() >= self.target {
                    break;
                }
                if let Some(d) = self.create(&desks, &mut rng).await {
                    own.insert(d.name.clone(), d);
                }
            }
            self.clean_up(&desks, &own).await;
            if due.early_delete.passed(t, Duration::from_secs(5)) {
                self.delete_one_early(&desks, &own, &mut rng).await;
            }
            if due.retime.passed(t, Duration::from_secs(3)) {
                self.retime_one(&desks, &own, &mut rng).await;
            }
            if due.vm_delete.passed(t, Duration::from_secs(20)) {
                self.delete_a_vm_by_hand(&mut rng).await;
            }
            if due.template.passed(t, Duration::from_secs(150)) {
                tokio::spawn(self.clone().break_template_for(Duration::from_secs(15)));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn create(&self, desks: &Api<DynamicObject>, rng: &mut fastrand::Rng) -> Option<Own> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = format!("soak-{n:06}");
        let timeout_ms = draw_timeout(rng);
        let delete_action = rng.u8(0..10) < 4;
        let mut spec = json!({
            "timeoutMs": timeout_ms,
            "timeoutAction": if delete_action { "Delete" } else { "Stop" },
        });
        match rng.u8(0..20) {
            0..=2 => spec["pool"] = json!(POOL),
            3..=4 => {
                spec["userDataSecretRef"] = json!({"name": USER_DATA_SECRET, "key": "userdata"})
            }
            _ => {}
        }
        let obj: DynamicObject = match serde_json::from_value(json!({
            "apiVersion": "cyberdesk.io/v1alpha1",
            "kind": "Cyberdesk",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": spec,
        })) {
            Ok(o) => o,
            Err(_) => return None,
        };
        // A client retries a refused create (webhook down, apiserver away) a few times.
        for attempt in 0..5 {
            match desks.create(&PostParams::default(), &obj).await {
                Ok(_) => {
                    self.tally.created.fetch_add(1, Ordering::Relaxed);
                    return Some(Own { name, timeout_ms });
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    return Some(Own { name, timeout_ms });
                }
                Err(_) => {
                    self.tally.refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
            }
        }
        None
    }

    fn forget_gone(&self, own: &mut BTreeMap<String, Own>) {
        let h = self.checker.history();
        let gone: Vec<String> = h
            .desks
            .values()
            .filter(|d| d.gone.is_some() && own.contains_key(&d.name))
            .map(|d| d.name.clone())
            .collect();
        drop(h);
        for name in gone {
            own.remove(&name);
        }
    }

    /// A user deletes a desk that timed out (Stop) a while ago, or failed for long.
    async fn clean_up(&self, desks: &Api<DynamicObject>, own: &BTreeMap<String, Own>) {
        let now = now_ms();
        let due: Vec<String> = {
            let h = self.checker.history();
            h.desks
                .values()
                .filter(|d| own.contains_key(&d.name) && d.deletion_seen.is_none())
                .filter(|d| {
                    (d.phase == "TimedOut" && now - d.phase_since > 10_000)
                        || (d.phase == "Failed" && now - d.phase_since > 30_000)
                })
                .map(|d| d.name.clone())
                .collect()
        };
        for name in due.into_iter().take(20) {
            self.delete_desk(desks, &name).await;
        }
    }

    async fn delete_desk(&self, desks: &Api<DynamicObject>, name: &str) {
        {
            let mut h = self.checker.history();
            if let Some(d) = h.desks.values_mut().find(|d| d.name == name) {
                d.deleted_by_user = true;
            }
        }
        if desks.delete(name, &DeleteParams::default()).await.is_ok() {
            self.tally.deleted.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn running(&self, own: &BTreeMap<String, Own>) -> Vec<(String, Ms)> {
        let h = self.checker.history();
        h.desks
            .values()
            .filter(|d| own.contains_key(&d.name) && d.phase == "Running" && d.gone.is_none())
            .filter_map(|d| Some((d.name.clone(), d.expiry?)))
            .collect()
    }

    async fn delete_one_early(
        &self,
        desks: &Api<DynamicObject>,
        own: &BTreeMap<String, Own>,
        rng: &mut fastrand::Rng,
    ) {
        let running = self.running(own);
        if let Some((name, _)) = pick(&running, rng) {
            self.delete_desk(desks, &name).await;
        }
    }

    /// Extends a running desk by a minute or shortens it to expire 10–30 s from now.
    async fn retime_one(
        &self,
        desks: &Api<DynamicObject>,
        own: &BTreeMap<String, Own>,
        rng: &mut fastrand::Rng,
    ) {
        let now = now_ms();
        let running: Vec<(String, Ms)> = self
            .running(own)
            .into_iter()
            .filter(|(_, e)| *e > now + 40_000)
            .collect();
        let Some((name, expiry)) = pick(&running, rng) else {
            return;
        };
        let Some(d) = own.get(&name) else { return };
        let start = expiry - d.timeout_ms;
        let timeout = if rng.bool() {
            d.timeout_ms + 60_000
        } else {
            (now + rng.i64(10_000..=30_000) - start).max(10_000)
        };
        let patch = json!({"spec": {"timeoutMs": timeout}});
        if desks
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .is_ok()
        {
            self.tally.retimed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Deletes a running desk's VM as an admin might; the operator must bring it back.
    async fn delete_a_vm_by_hand(&self, rng: &mut fastrand::Rng) {
        let candidates: Vec<(String, String)> = {
            let h = self.checker.history();
            h.vms
                .iter()
                .filter(|(_, v)| v.gone.is_none() && !v.halted && !v.pool_owned)
                .filter_map(|(_, v)| {
                    let desk = v.desks.last()?;
                    let d = h.desks.get(desk)?;
                    (d.phase == "Running" && d.expiry? > now_ms() + 30_000)
                        .then(|| (desk.clone(), v.name.clone()))
                })
                .collect()
        };
        let Some((desk, vm)) = pick(&candidates, rng) else {
            return;
        };
        *self.checker.history().hand_deleted.entry(desk).or_insert(0) += 1;
        let vms: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &crate::kubevirt::vm_resource(),
        );
        if vms.delete(&vm, &DeleteParams::default()).await.is_ok() {
            self.tally
                .vms_deleted_by_hand
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An admin publishes a template that does not parse, then takes it back.
    async fn break_template_for(self, how_long: Duration) {
        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(self.client.clone(), "cyberdesk-system");
        let broken: k8s_openapi::api::core::v1::ConfigMap = match serde_json::from_value(json!({
            "metadata": {"name": TEMPLATE_CONFIGMAP, "labels": {"cyberdesk.io/template": "true"}},
            "data": {"template.yaml": "apiVersion: kubevirt.io/v1\nkind: [this is not a VM"},
        })) {
            Ok(cm) => cm,
            Err(_) => return,
        };
        if cms.create(&PostParams::default(), &broken).await.is_ok() {
            self.tally.template_breaks.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(how_long).await;
            // Retried: the apiserver may be away when the fix is due.
            for _ in 0..60 {
                match cms
                    .delete(TEMPLATE_CONFIGMAP, &DeleteParams::default())
                    .await
                {
                    Ok(_) => break,
                    Err(kube::Error::Api(e)) if e.code == 404 => break,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
        }
    }
}

/// When each periodic action is next due (the first after one period).
#[derive(Default)]
struct Due {
    early_delete: Next,
    retime: Next,
    vm_delete: Next,
    template: Next,
}

#[derive(Default)]
struct Next(Option<Duration>);

impl Next {
    fn passed(&mut self, now: Duration, every: Duration) -> bool {
        let at = *self.0.get_or_insert(every / 3);
        if now < at {
            return false;
        }
        self.0 = Some(now + every);
        true
    }
}

fn pick<T: Clone>(items: &[T], rng: &mut fastrand::Rng) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.usize(..items.len())].clone())
}
