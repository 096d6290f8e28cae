//! The simulator's public face: options, the handle that keeps it running, counters for
//! tests, and the wiring of its two controllers (virt-controller's VM controller, and the
//! VMI lifecycle that virt-controller and virt-handler share).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use serde_json::{Value, json};

use super::api::{post_params, replace_guarded};
use super::context::{Context, Counters, SimulatorOptions, StartFault, lock};
use super::status::{RUNNING, condition, conditions, now, status_mut, upsert_condition};
use super::vmi_controller::{enter_phase, not_running};
use super::{Error, vm_controller, vmi_controller};

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
