//! The simulator's public face: options, the handle that keeps it running, counters for
//! tests, and the wiring of its two controllers (virt-controller's VM controller, and the
//! VMI lifecycle that virt-controller and virt-handler share).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use serde_json::{Value, json};

use super::api::replace_guarded;
use super::status::{RUNNING, condition, conditions, now, status_mut, upsert_condition};
use super::vmi_controller::{enter_phase, not_running};
use super::{Error, vm_controller, vm_resource, vmi_controller, vmi_resource};

/// How the simulated KubeVirt behaves. `Default` is instant boots in all namespaces.
#[derive(Clone, Debug)]
pub struct SimulatorOptions {
    /// Only VMs and VMIs of this namespace; `None` watches all namespaces. Tests sharing a
    /// control plane should each scope their simulator to their own namespace.
    pub namespace: Option<String>,
    /// Time a VMI stays `Pending` (virt-controller creating the launcher pod).
    pub pending_to_scheduling: Duration,
    /// Time a VMI stays `Scheduling` (the pod being scheduled and started).
    pub scheduling_to_scheduled: Duration,
    /// Time a VMI stays `Scheduled` (virt-handler booting the domain).
    pub scheduled_to_running: Duration,
    /// Time a deleted, running VMI takes to shut down (the VM shows `Stopping` meanwhile).
    pub shutdown: Duration,
    /// Address given to the first VMI that runs; each later one gets the next address.
    pub first_ip: Ipv4Addr,
    /// Node every VMI is scheduled to.
    pub node_name: String,
    /// Time from `Running` to `Ready=True`, as with a readiness probe that waits for
    /// cloud-init; until then `Ready` is `False` with the pod's reason `ContainersNotReady`.
    pub ready_after_running: Duration,
    /// Time from `Running` to the guest agent reporting an address; until then the
    /// interface shows only what the domain knows (no `ipAddress`).
    pub ip_after_running: Duration,
    /// How long a VM with `runStrategy: Always` waits before restarting a VMI that ended:
    /// KubeVirt's crash-loop backoff (`printableStatus: CrashLoopBackOff` after a
    /// failure). Zero restarts at once.
    pub restart_backoff: Duration,
    /// The guest agent also reports an interface no network of the spec has (a bridge
    /// inside the guest), after the spec's ones.
    pub guest_only_interface: bool,
}

/// A way a VMI's start gets stuck, held until [`SimulatorHandle::release_start`]. The VMI
/// stays `Scheduling` (its launcher pod never runs) with the condition KubeVirt shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFault {
    /// No node fits: `PodScheduled=False`, reason `Unschedulable` (VM: `ErrorUnschedulable`).
    Unschedulable,
    /// The container disk image cannot be pulled: `Synchronized=False`, reason
    /// `ErrImagePull` (VM: `ErrImagePull`).
    ErrImagePull,
}

/// A `virtctl` request, as virt-api's `start`/`stop` subresources record it for a VM
/// with `runStrategy: Manual`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Virtctl {
    Start,
    Stop,
}

impl Default for SimulatorOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            pending_to_scheduling: Duration::ZERO,
            scheduling_to_scheduled: Duration::ZERO,
            scheduled_to_running: Duration::ZERO,
            shutdown: Duration::ZERO,
            first_ip: Ipv4Addr::new(10, 244, 0, 10),
            node_name: "sim-node-1".into(),
            ready_after_running: Duration::ZERO,
            ip_after_running: Duration::ZERO,
            restart_backoff: Duration::ZERO,
            guest_only_interface: false,
        }
    }
}

impl SimulatorOptions {
    /// Defaults, limited to one namespace.
    pub fn in_namespace(namespace: impl Into<String>) -> Self {
        Self {
            namespace: Some(namespace.into()),
            ..Self::default()
        }
    }

    /// These options, limited to `namespace`.
    pub fn within(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The same `delay` for each of the three phase steps before `Running`.
    pub fn with_phase_delay(mut self, delay: Duration) -> Self {
        self.pending_to_scheduling = delay;
        self.scheduling_to_scheduled = delay;
        self.scheduled_to_running = delay;
        self
    }
}

/// What the simulator did, for assertions.
#[derive(Debug, Default)]
pub struct Counters {
    /// VMIs created by the VM controller.
    pub vmis_created: AtomicU64,
    /// DELETE calls the VM controller sent for VMIs.
    pub vmis_deleted: AtomicU64,
    /// Writes to VM `/status`.
    pub vm_status_writes: AtomicU64,
    /// Patches of VMIs (phase steps, labels, finalizers, annotations).
    pub vmi_writes: AtomicU64,
    /// Patches of VM metadata (finalizers, annotations).
    pub vm_metadata_writes: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Entry point: `Simulator::start(client, options)`.
pub struct Simulator;

impl Simulator {
    /// Spawns the simulated controllers on the current Tokio runtime (so call it from
    /// inside one). They run until the returned handle is dropped or stopped.
    pub fn start(client: Client, opts: SimulatorOptions) -> SimulatorHandle {
        let ctx = Arc::new(Context::new(client, opts));
        let tasks = vec![
            tokio::spawn(run_vm_controller(ctx.clone())),
            tokio::spawn(run_vmi_controller(ctx.clone())),
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
            match vms
                .replace_status(name, &kube::api::PostParams::default(), &vm)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
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

/// State shared by both controllers and the handle.
pub(super) struct Context {
    pub client: Client,
    pub opts: SimulatorOptions,
    pub counters: Counters,
    pub vm_ar: ApiResource,
    pub vmi_ar: ApiResource,
    boot_failures: Mutex<HashSet<(String, String)>>,
    start_faults: Mutex<HashMap<(String, String), StartFault>>,
    /// VMI uid → (step, when the simulator first saw the VMI at that step).
    step_started: Mutex<HashMap<String, (String, Instant)>>,
    next_address: AtomicU32,
}

impl Context {
    fn new(client: Client, opts: SimulatorOptions) -> Self {
        Self {
            client,
            opts,
            counters: Counters::default(),
            vm_ar: vm_resource(),
            vmi_ar: vmi_resource(),
            boot_failures: Mutex::default(),
            start_faults: Mutex::default(),
            step_started: Mutex::default(),
            next_address: AtomicU32::new(0),
        }
    }

    pub fn vms(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.vm_ar)
    }

    pub fn vmis(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.vmi_ar)
    }

    fn scoped(&self, ar: &ApiResource) -> Api<DynamicObject> {
        match &self.opts.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Whether the next boot of this VMI was asked to fail.
    pub fn boot_should_fail(&self, namespace: &str, name: &str) -> bool {
        lock(&self.boot_failures).contains(&(namespace.to_owned(), name.to_owned()))
    }

    /// The fault holding this VMI's start, if any.
    pub fn start_fault(&self, namespace: &str, name: &str) -> Option<StartFault> {
        lock(&self.start_faults)
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// Forgets a failure request once the failed boot is written.
    pub fn take_boot_failure(&self, namespace: &str, name: &str) {
        lock(&self.boot_failures).remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// How long VMI `uid` still has to stay at `step` before it may move on; `None` when
    /// it may move now. The clock starts the first time the step is seen.
    pub fn time_left(&self, uid: &str, step: &str, delay: Duration) -> Option<Duration> {
        if delay.is_zero() {
            return None;
        }
        let now = Instant::now();
        let mut steps = lock(&self.step_started);
        let entry = steps
            .entry(uid.to_owned())
            .or_insert_with(|| (step.to_owned(), now));
        if entry.0 != step {
            *entry = (step.to_owned(), now);
        }
        let elapsed = now.duration_since(entry.1);
        (elapsed < delay).then(|| delay - elapsed)
    }

    /// Starts the clock of `step` for VMI `uid` now (right after writing that step).
    pub fn step_entered(&self, uid: &str, step: &str) {
        lock(&self.step_started).insert(uid.to_owned(), (step.to_owned(), Instant::now()));
    }

    pub fn forget(&self, uid: &str) {
        lock(&self.step_started).remove(uid);
    }

    /// The next guest address (and a MAC derived from the same number).
    pub fn next_address(&self) -> (String, String) {
        let n = self.next_address.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::from(u32::from(self.opts.first_ip).wrapping_add(n));
        let [a, b, c, d] = n.to_be_bytes();
        (
            ip.to_string(),
            format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
        )
    }
}

/// A poisoned lock only means another pass panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_vm_controller(ctx: Arc<Context>) {
    let vm_ar = ctx.vm_ar.clone();
    // A VMI always carries its VM's name, so any VMI event wakes the VM of that name.
    let vmi_to_vm = move |vmi: DynamicObject| {
        let ns = vmi.namespace().unwrap_or_default();
        Some(ObjectRef::new_with(&vmi.name_any(), vm_ar.clone()).within(&ns))
    };
    Controller::new_with(
        ctx.scoped(&ctx.vm_ar),
        watcher::Config::default(),
        ctx.vm_ar.clone(),
    )
    .watches_with(
        ctx.scoped(&ctx.vmi_ar),
        ctx.vmi_ar.clone(),
        watcher::Config::default(),
        vmi_to_vm,
    )
    .run(vm_controller::reconcile, error_policy, ctx.clone())
    .for_each(|result| async move { log_result("VirtualMachine", result) })
    .await;
}

async fn run_vmi_controller(ctx: Arc<Context>) {
    Controller::new_with(
        ctx.scoped(&ctx.vmi_ar),
        watcher::Config::default(),
        ctx.vmi_ar.clone(),
    )
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
