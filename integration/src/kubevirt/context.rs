//! What the simulator's two controllers and its handle share: the options, the counters
//! and the per-VMI bookkeeping. Its own module so the controllers import it, not each other
//! or the handle.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::reflector::{ObjectRef, Store};

use super::{vm_resource, vmi_resource};

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

/// State shared by both controllers and the handle.
pub(super) struct Context {
    pub client: Client,
    pub opts: SimulatorOptions,
    pub counters: Counters,
    pub vm_ar: ApiResource,
    pub vmi_ar: ApiResource,
    /// What the watches have seen of VMIs, as virt-controller's informer holds them.
    pub(super) vmi_cache: Store<DynamicObject>,
    pub(super) boot_failures: Mutex<HashSet<(String, String)>>,
    pub(super) start_faults: Mutex<HashMap<(String, String), StartFault>>,
    /// VMI uid → (step, when the simulator first saw the VMI at that step).
    step_started: Mutex<HashMap<String, (String, Instant)>>,
    next_address: AtomicU32,
}

impl Context {
    pub(super) fn new(
        client: Client,
        opts: SimulatorOptions,
        vmi_cache: Store<DynamicObject>,
    ) -> Self {
        Self {
            client,
            opts,
            counters: Counters::default(),
            vm_ar: vm_resource(),
            vmi_ar: vmi_resource(),
            vmi_cache,
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

    /// The cached VMI `namespace/name`: possibly a moment old, so every write made from
    /// it is guarded by its resourceVersion or uid.
    pub(super) fn cached_vmi(&self, namespace: &str, name: &str) -> Option<DynamicObject> {
        let key = ObjectRef::new_with(name, self.vmi_ar.clone()).within(namespace);
        self.vmi_cache.get(&key).map(|vmi| (*vmi).clone())
    }

    pub(super) fn scoped(&self, ar: &ApiResource) -> Api<DynamicObject> {
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
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
