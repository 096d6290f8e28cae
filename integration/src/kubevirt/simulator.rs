//! The simulator's public face: options, the handle that keeps it running, counters for
//! tests, and the wiring of its two controllers (virt-controller's VM controller, and the
//! VMI lifecycle that virt-controller and virt-handler share).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use serde_json::{Value, json};

use super::api::{post_params, replace_guarded};
use super::context::{Context, Counters, SimulatorOptions, StartFault, lock};
use super::status::{RUNNING, condition, conditions, now, status_mut, upsert_condition};
use super::vmi_controller::{enter_phase, not_running};
use super::{Error, vm_controller, vm_resource, vmi_controller, vmi_resource};

/// A `virtctl` request, as virt-api's `start`/`stop` subresources record it for a VM
/// with `runStrategy: Manual`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtctl {
    Start,
    Stop,
}

/// Entry point: `Simulator::start(client, options)`.
pub struct Simulator;

impl Simulator {
    /// Spawns the simulated controllers on the current Tokio runtime (so call it from
    /// inside one). They run until the returned handle is dropped or stopped.
    ///
    /// Like virt-controller, both controllers read VMs and VMIs from watch caches (one
    /// watch per kind, shared by both), not with a GET per pass.
    pub fn start(client: Client, opts: SimulatorOptions) -> SimulatorHandle {
        let vm_writer = Writer::new(vm_resource());
        let vmi_writer = Writer::new(vmi_resource());
        let (vm_cache, vmi_cache) = (vm_writer.as_reader(), vmi_writer.as_reader());
        let ctx = Arc::new(Context::new(client, opts, vmi_cache.clone()));
        let (vm_tx, vm_events) = mpsc::unbounded();
        let (vmi_tx, vmi_events) = mpsc::unbounded();
        let (vmi_tx_for_vms, vmi_events_for_vms) = mpsc::unbounded();
        let tasks = vec![
            tokio::spawn(feed(ctx.scoped(&ctx.vm_ar), vm_writer, vec![vm_tx])),
            tokio::spawn(feed(
                ctx.scoped(&ctx.vmi_ar),
                vmi_writer,
                vec![vmi_tx, vmi_tx_for_vms],
            )),
            tokio::spawn(run_vm_controller(
                ctx.clone(),
                vm_cache,
                vm_events,
                vmi_events_for_vms,
            )),
            tokio::spawn(run_vmi_controller(ctx.clone(), vmi_cache, vmi_events)),
        ];
        SimulatorHandle { ctx, tasks }
    }
}

/// Keeps the simulator alive; dropping it aborts the controllers.
pub struct SimulatorHandle {
    ctx: Arc<Context>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimulatorHandle {
    /// The live counters.
    pub fn counters(&self) -> &Counters {
        &self.ctx.counters
    }

    pub fn vmis_created(&self) -> u64 {
        self.ctx.counters.vmis_created.load(Ordering::Relaxed)
    }

    pub fn vmis_deleted(&self) -> u64 {
        self.ctx.counters.vmis_deleted.load(Ordering::Relaxed)
    }

    /// The next boot of VMI `namespace/name` ends in phase `Failed` instead of `Running`,
    /// as if the guest crashed on start.
    pub fn fail_next_boot(&self, namespace: &str, name: &str) {
        lock(&self.ctx.boot_failures).insert((namespace.to_owned(), name.to_owned()));
    }

    /// From now on, VMI `namespace/name` cannot start: it is held at `Scheduling` with
    /// the condition of `fault`, and its VM shows the matching error state.
    pub fn hold_start(&self, namespace: &str, name: &str, fault: StartFault) {
        lock(&self.ctx.start_faults).insert((namespace.to_owned(), name.to_owned()), fault);
    }

    /// Lets a held VMI start (within a fraction of a second).
    pub fn release_start(&self, namespace: &str, name: &str) {
        lock(&self.ctx.start_faults).remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// `virtctl start|stop` on VM `namespace/name`: appends the request to the VM's
    /// `status.stateChangeRequests` (a stop names the running VMI by uid), as virt-api does.
    pub async fn virtctl(&self, namespace: &str, name: &str, action: Virtctl) -> Result<(), Error> {
        let request = match action {
            Virtctl::Start => json!({"action": "Start"}),
            Virtctl::Stop => {
                let vmi = self.ctx.vmis(namespace).get(name).await?;
                json!({"action": "Stop", "uid": vmi.metadata.uid})
            }
        };
        let vms = self.ctx.vms(namespace);
        loop {
            let mut vm = vms.get_status(name).await?;
            let Some(status) = vm.data.get_mut("status").and_then(Value::as_object_mut) else {
                return Err(Error::NotReported(format!(
                    "{namespace}/{name} has no status"
                )));
            };
            let requests = status
                .entry("stateChangeRequests")
                .or_insert_with(|| json!([]));
            if let Some(list) = requests.as_array_mut() {
                list.push(request.clone());
            }
            match vms.replace_status(name, &post_params(), &vm).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The guest agent reports a new address for the running VMI `namespace/name` (say a
    /// DHCP renewal); returns it.
    pub async fn change_ip(&self, namespace: &str, name: &str) -> Result<String, Error> {
        let vmis = self.ctx.vmis(namespace);
        loop {
            let mut vmi = vmis.get(name).await?;
            let (ip, _) = self.ctx.next_address();
            let Some(iface) = vmi
                .data
                .pointer_mut("/status/interfaces/0")
                .and_then(Value::as_object_mut)
            else {
                return Err(Error::NotReported(format!(
                    "{namespace}/{name} reports no interface"
                )));
            };
            iface.insert("ipAddress".into(), json!(ip));
            iface.insert("ipAddresses".into(), json!([ip]));
            match replace_guarded(&vmis, &vmi).await {
                Ok(_) => return Ok(ip),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts the VMI `namespace/name` in `phase` as virt-controller or virt-handler would:
    /// `Succeeded` when the guest shuts itself down, `Failed` when it crashes, `Unknown`
    /// when its node stops answering, `Running` when it answers again.
    pub async fn set_vmi_phase(
        &self,
        namespace: &str,
        name: &str,
        phase: &str,
    ) -> Result<(), Error> {
        let vmis = self.ctx.vmis(namespace);
        loop {
            let vmi = vmis.get(name).await?;
            let mut updated = vmi.clone();
            let mut conds = conditions(&vmi);
            let now = now();
            if phase != RUNNING {
                upsert_condition(&mut conds, not_running(&now));
            } else {
                upsert_condition(
                    &mut conds,
                    condition("Ready", "True", "", "", None, Some(&now)),
                );
            }
            let Some(status) = status_mut(&mut updated) else {
                return Err(Error::NotReported(format!(
                    "{namespace}/{name} has no status object"
                )));
            };
            status.insert("conditions".into(), Value::Array(conds));
            enter_phase(status, &vmi, phase, &now);
            match replace_guarded(&vmis, &updated).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Aborts the controllers and waits until they have stopped.
    pub async fn stop(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for SimulatorHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// virt-controller's default worker counts: 3 for its VM controller, 10 for its VMI
/// controller (`defaultControllerThreads`, `defaultVMIControllerThreads`). With more, the
/// simulator would answer a burst of desks faster than KubeVirt can, and crowd the
/// apiserver the operator shares with it.
const VM_WORKERS: u16 = 3;
const VMI_WORKERS: u16 = 10;

fn workers(n: u16) -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(n)
}

/// Objects the watch touched, once the cache holds them.
type Touched = mpsc::UnboundedReceiver<Result<DynamicObject, watcher::Error>>;

/// One watch filling one cache, then handing each touched object to every controller that
/// follows the kind (kube's shared streams need a static type; these are dynamic).
async fn feed(
    api: Api<DynamicObject>,
    writer: Writer<DynamicObject>,
    followers: Vec<mpsc::UnboundedSender<Result<DynamicObject, watcher::Error>>>,
) {
    let kind = api.resource_url().to_string();
    let events = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut events = std::pin::pin!(events);
    let mut handover = Handover::default();
    while let Some(event) = events.next().await {
        // The watcher retries on its own backoff; the controllers need not know.
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::debug!(kind = %kind, error = %e, "kubevirt simulator watch failed; it retries");
                continue;
            }
        };
        if matches!(event, watcher::Event::Init) {
            tracing::debug!(kind = %kind, "kubevirt simulator watch relists");
        }
        for obj in handover.touched(event) {
            for follower in &followers {
                let _ = follower.unbounded_send(Ok(obj.clone()));
            }
        }
    }
}

/// Which objects a watch event hands to the controllers, as client-go's informers do:
/// a relist's objects only once it is complete, when kube's reflector swaps them into the
/// cache (a pass woken earlier would read the cache's copy from before the relist, act on
/// it, and wait for a change that already happened); and every object that vanished while
/// the watch was down (absent from the relist), so the controllers see it gone: a VM whose
/// VMI went away during an apiserver outage must still be woken to release its finalizer.
#[derive(Default)]
struct Handover {
    known: HashMap<(String, String), DynamicObject>,
    /// The relist under way: what it listed so far.
    relisting: Option<Vec<DynamicObject>>,
}

impl Handover {
    fn touched(&mut self, event: watcher::Event<DynamicObject>) -> Vec<DynamicObject> {
        let key = |o: &DynamicObject| (o.namespace().unwrap_or_default(), o.name_any());
        match event {
            watcher::Event::Init => {
                self.relisting = Some(Vec::new());
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                self.relisting.get_or_insert_with(Vec::new).push(obj);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                let keys: HashSet<(String, String)> = listed.iter().map(key).collect();
                let mut touched: Vec<DynamicObject> = self
                    .known
                    .iter()
                    .filter(|(k, _)| !keys.contains(*k))
                    .map(|(_, obj)| obj.clone())
                    .collect();
                self.known = listed.iter().map(|o| (key(o), o.clone())).collect();
                touched.extend(listed);
                touched
            }
            watcher::Event::Apply(obj) => {
                self.known.insert(key(&obj), obj.clone());
                vec![obj]
            }
            watcher::Event::Delete(obj) => {
                self.known.remove(&key(&obj));
                vec![obj]
            }
        }
    }
}

async fn run_vm_controller(
    ctx: Arc<Context>,
    vms: Store<DynamicObject>,
    vm_events: Touched,
    vmi_events: Touched,
) {
    let vm_ar = ctx.vm_ar.clone();
    // A VMI always carries its VM's name, so any VMI event wakes the VM of that name.
    let vmi_to_vm = move |vmi: DynamicObject| {
        let ns = vmi.namespace().unwrap_or_default();
        Some(ObjectRef::new_with(&vmi.name_any(), vm_ar.clone()).within(&ns))
    };
    Controller::for_stream_with(vm_events, vms, ctx.vm_ar.clone())
        .with_config(workers(VM_WORKERS))
        .watches_stream_with(vmi_events, vmi_to_vm, ctx.vmi_ar.clone())
        .run(vm_controller::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move { log_result("VirtualMachine", result) })
        .await;
}

async fn run_vmi_controller(ctx: Arc<Context>, vmis: Store<DynamicObject>, vmi_events: Touched) {
    Controller::for_stream_with(vmi_events, vmis, ctx.vmi_ar.clone())
        .with_config(workers(VMI_WORKERS))
        .run(vmi_controller::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move { log_result("VirtualMachineInstance", result) })
        .await;
}

fn error_policy(obj: Arc<DynamicObject>, err: &Error, _ctx: Arc<Context>) -> Action {
    let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
    if err.is_conflict() {
        tracing::debug!(namespace = %ns, name = %name, "kubevirt simulator lost a write race; retrying");
        Action::requeue(Duration::from_millis(20))
    } else {
        tracing::warn!(namespace = %ns, name = %name, error = %err, "kubevirt simulator pass failed; retrying");
        Action::requeue(Duration::from_millis(500))
    }
}

fn log_result<T, E: std::fmt::Display>(kind: &str, result: Result<T, E>) {
    if let Err(e) = result {
        tracing::debug!(kind, error = %e, "kubevirt simulator controller event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmi(name: &str, version: &str) -> DynamicObject {
        let mut obj = DynamicObject::new(name, &vmi_resource()).within("ns");
        obj.metadata.resource_version = Some(version.into());
        obj
    }

    fn names(objs: &[DynamicObject]) -> Vec<String> {
        let mut out: Vec<String> = objs
            .iter()
            .map(|o| {
                format!(
                    "{}@{}",
                    o.name_any(),
                    o.resource_version().unwrap_or_default()
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_relist_is_handed_over_once_complete_with_what_vanished() {
        let mut h = Handover::default();
        assert!(h.touched(watcher::Event::Init).is_empty());
        assert!(
            h.touched(watcher::Event::InitApply(vmi("a", "1")))
                .is_empty()
        );
        assert!(
            h.touched(watcher::Event::InitApply(vmi("b", "1")))
                .is_empty()
        );
        assert_eq!(names(&h.touched(watcher::Event::InitDone)), ["a@1", "b@1"]);
        assert_eq!(
            names(&h.touched(watcher::Event::Apply(vmi("a", "2")))),
            ["a@2"]
        );

        // The watch went down; "a" changed (say it is being deleted) and "b" went away.
        assert!(h.touched(watcher::Event::Init).is_empty());
        assert!(
            h.touched(watcher::Event::InitApply(vmi("a", "3")))
                .is_empty(),
            "handed over before the cache holds it: a pass would read the old copy"
        );
        assert_eq!(names(&h.touched(watcher::Event::InitDone)), ["a@3", "b@1"]);
        assert_eq!(
            names(&h.touched(watcher::Event::Delete(vmi("a", "4")))),
            ["a@4"]
        );
    }
}
