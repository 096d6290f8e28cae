//! The VMI lifecycle that virt-controller and virt-handler share: phases Pending →
//! Scheduling → Scheduled → Running (or Failed), the Ready condition, node and address,
//! and shutting a deleted VMI down. The VMI has no status subresource, so status is
//! written with the main resource (a full update, which keeps `null` condition times).

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::controller::Action;
use serde_json::{Map, Value, json};

use super::api::{patch_guarded, replace_guarded};
use super::context::{Context, Counters, StartFault};
use super::status::{
    FAILED, PENDING, RUNNING, SCHEDULED, SCHEDULING, SUCCEEDED, condition, conditions,
    finalizers_without, has_condition, has_finalizer, is_deleting, is_final, now, phase,
    remove_condition, status_mut, upsert_condition,
};
use super::{Error, NODE_NAME_LABEL, VM_CONTROLLER_FINALIZER, VMI_FOREGROUND_FINALIZER};

/// Step name for the shutdown clock (not a phase).
const SHUTTING_DOWN: &str = "ShuttingDown";

pub(super) async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(ns) = obj.namespace() else {
        return Ok(Action::await_change());
    };
    let vmis = ctx.vmis(&ns);
    // The cached VMI, as the controller hands it over: every write from it is guarded by
    // its resourceVersion, so a stale one is refused and the pass runs again.
    let vmi = (*obj).clone();
    let life = Lifecycle {
        ctx: &ctx,
        vmis,
        ns,
    };
    if is_final(&vmi) {
        life.ctx.forget(&vmi.uid().unwrap_or_default());
        life.release(&vmi).await?;
        return Ok(Action::await_change());
    }
    if is_deleting(&vmi.metadata) {
        return life.shut_down(&vmi).await;
    }
    life.walk(&vmi).await
}

/// One pass over one VMI.
struct Lifecycle<'a> {
    ctx: &'a Context,
    vmis: Api<DynamicObject>,
    ns: String,
}

impl Lifecycle<'_> {
    /// Moves the VMI one phase on once it has spent its configured time in this one.
    async fn walk(&self, vmi: &DynamicObject) -> Result<Action, Error> {
        let opts = &self.ctx.opts;
        let current = phase(vmi);
        let (delay, next) = match current {
            "" => (Duration::ZERO, PENDING),
            PENDING => (opts.pending_to_scheduling, SCHEDULING),
            SCHEDULING => (opts.scheduling_to_scheduled, SCHEDULED),
            SCHEDULED => (opts.scheduled_to_running, RUNNING),
            RUNNING => return self.settle_running(vmi).await,
            // Unknown, WaitingForSync: nothing to move on to.
            _ => return Ok(Action::await_change()),
        };
        if current == SCHEDULING
            && let Some(fault) = self.ctx.start_fault(&self.ns, &vmi.name_any())
        {
            return self.hold(vmi, fault).await;
        }
        let uid = vmi.uid().unwrap_or_default();
        if let Some(left) = self.ctx.time_left(&uid, current, delay) {
            return Ok(Action::requeue(left));
        }
        let name = vmi.name_any();
        let fail = next == RUNNING && self.ctx.boot_should_fail(&self.ns, &name);
        let next = if fail { FAILED } else { next };
        if self.write(self.entering(vmi, next)).await? {
            self.ctx.step_entered(&uid, next);
            if fail {
                self.ctx.take_boot_failure(&self.ns, &name);
            }
            tracing::debug!(vmi = %name, phase = next, "kubevirt simulator: VMI phase");
        }
        Ok(Action::await_change())
    }

    /// A start held by a fault: the condition KubeVirt shows for it, then a look every
    /// 200 ms whether the fault was released.
    async fn hold(&self, vmi: &DynamicObject, fault: StartFault) -> Result<Action, Error> {
        let (kind, reason, message) = fault_condition(fault);
        let mut conds = conditions(vmi);
        if !has_condition(&conds, kind, "False", Some(reason)) {
            upsert_condition(
                &mut conds,
                condition(kind, "False", reason, message, None, Some(&now())),
            );
            let mut updated = vmi.clone();
            if let Some(status) = status_mut(&mut updated) {
                status.insert("conditions".into(), Value::Array(conds));
                self.write(Some(updated)).await?;
            }
        }
        Ok(Action::requeue(Duration::from_millis(200)))
    }

    /// A running VMI whose readiness probe or guest agent is configured to come later:
    /// `Ready=True` after `ready_after_running`, the address after `ip_after_running`.
    async fn settle_running(&self, vmi: &DynamicObject) -> Result<Action, Error> {
        let opts = &self.ctx.opts;
        let uid = vmi.uid().unwrap_or_default();
        let mut conds = conditions(vmi);
        let needs_ready = !has_condition(&conds, "Ready", "True", None);
        let needs_ip = vmi.data["status"]["interfaces"][0]["ipAddress"]
            .as_str()
            .is_none();
        let ready_left = needs_ready
            .then(|| self.ctx.time_left(&uid, RUNNING, opts.ready_after_running))
            .flatten();
        let ip_left = needs_ip
            .then(|| self.ctx.time_left(&uid, RUNNING, opts.ip_after_running))
            .flatten();
        let ready_now = needs_ready && ready_left.is_none();
        let ip_now = needs_ip && ip_left.is_none();
        if ready_now || ip_now {
            let now = now();
            let mut updated = vmi.clone();
            if ready_now {
                upsert_condition(
                    &mut conds,
                    condition("Ready", "True", "", "", None, Some(&now)),
                );
            }
            if ip_now {
                upsert_condition(
                    &mut conds,
                    condition("AgentConnected", "True", "", "", None, None),
                );
            }
            let interfaces = ip_now.then(|| self.interfaces(vmi, true));
            if let Some(status) = status_mut(&mut updated) {
                status.insert("conditions".into(), Value::Array(conds));
                if let Some(interfaces) = interfaces {
                    status.insert("interfaces".into(), interfaces);
                }
                self.write(Some(updated)).await?;
            }
        }
        Ok([ready_left, ip_left]
            .into_iter()
            .flatten()
            .min()
            .map_or_else(Action::await_change, Action::requeue))
    }

    /// The VMI as it is once it has entered phase `next`.
    fn entering(&self, vmi: &DynamicObject, next: &str) -> Option<DynamicObject> {
        let now = now();
        let mut conds = conditions(vmi);
        // A start fault that was released is over once the VMI moves on.
        for kind in ["PodScheduled", "Synchronized"] {
            if has_condition(&conds, kind, "False", None) {
                remove_condition(&mut conds, kind);
            }
        }
        let mut updated = vmi.clone();
        let node = &self.ctx.opts.node_name;
        let mut extra = Map::new();
        match next {
            SCHEDULING | FAILED => upsert_condition(&mut conds, not_running(&now)),
            SCHEDULED => {
                upsert_condition(&mut conds, not_running(&now));
                extra.insert("nodeName".into(), json!(node));
                updated
                    .labels_mut()
                    .insert(NODE_NAME_LABEL.into(), node.clone());
            }
            RUNNING => {
                let opts = &self.ctx.opts;
                let ready = if opts.ready_after_running.is_zero() {
                    condition("Ready", "True", "", "", None, Some(&now))
                } else {
                    // The launcher pod's readiness probe has not passed yet.
                    condition(
                        "Ready",
                        "False",
                        "ContainersNotReady",
                        "containers with unready status: [compute]",
                        None,
                        Some(&now),
                    )
                };
                upsert_condition(&mut conds, ready);
                // virt-handler writes these without any timestamps.
                upsert_condition(
                    &mut conds,
                    condition("LiveMigratable", "True", "", "", None, None),
                );
                let agent = opts.ip_after_running.is_zero();
                if agent {
                    upsert_condition(
                        &mut conds,
                        condition("AgentConnected", "True", "", "", None, None),
                    );
                }
                extra.insert("interfaces".into(), self.interfaces(vmi, agent));
            }
            _ => {}
        }
        let status = status_mut(&mut updated)?;
        status.extend(extra);
        if !conds.is_empty() {
            status.insert("conditions".into(), Value::Array(conds));
        }
        enter_phase(status, vmi, next, &now);
        Some(updated)
    }

    /// One entry per network, in spec order, as virt-handler lists them: as the guest agent
    /// reports them, or (`with_agent` false) only what the domain knows, without addresses.
    /// The first network gets the next pod-network address, each further one an address on
    /// its own subnet; with `guest_only_interface` the agent also lists an interface the
    /// spec does not know (a bridge inside the guest), last and without a name.
    fn interfaces(&self, vmi: &DynamicObject, with_agent: bool) -> Value {
        let spec = &vmi.data["spec"];
        let mut networks: Vec<&str> = spec["networks"]
            .as_array()
            .map(|n| n.iter().filter_map(|n| n["name"].as_str()).collect())
            .unwrap_or_default();
        if networks.is_empty() {
            networks.push("default");
        }
        let devices = &spec["domain"]["devices"]["interfaces"];
        let spec_mac = |i: usize, name: &str| {
            devices
                .as_array()
                .and_then(|list| list.iter().find(|d| d["name"] == name))
                .unwrap_or(&devices[i])["macAddress"]
                .as_str()
        };
        let address = with_agent.then(|| self.ctx.next_address());
        let mut listed: Vec<Value> = networks
            .iter()
            .enumerate()
            .map(|(i, network)| {
                let mut iface = json!({"name": network, "infoSource": "domain", "queueCount": 1});
                let Some((ip, mac)) = &address else {
                    if let Some(mac) = spec_mac(i, network) {
                        iface["mac"] = json!(mac);
                    }
                    return iface;
                };
                let (ip, mac) = if i == 0 {
                    (ip.clone(), mac.clone())
                } else {
                    let host = ip.rsplit('.').next().unwrap_or("1");
                    (format!("192.168.{i}.{host}"), format!("06{}", &mac[2..]))
                };
                iface["interfaceName"] = json!(format!("eth{i}"));
                iface["ipAddress"] = json!(ip);
                iface["ipAddresses"] = json!([ip]);
                iface["mac"] = json!(spec_mac(i, network).unwrap_or(&mac));
                iface["infoSource"] = json!("domain, guest-agent");
                iface
            })
            .collect();
        if with_agent && self.ctx.opts.guest_only_interface {
            listed.push(json!({
                "interfaceName": "docker0",
                "ipAddress": "172.17.0.1",
                "ipAddresses": ["172.17.0.1"],
                "mac": "02:42:ac:11:00:01",
                "infoSource": "guest-agent",
            }));
        }
        Value::Array(listed)
    }

    /// A deleted VMI: a running guest shuts down (Succeeded) after the configured time,
    /// one that never ran fails at once. virt-controller then drops its finalizer.
    async fn shut_down(&self, vmi: &DynamicObject) -> Result<Action, Error> {
        let running = phase(vmi) == RUNNING;
        let uid = vmi.uid().unwrap_or_default();
        let delay = if running {
            self.ctx.opts.shutdown
        } else {
            Duration::ZERO
        };
        let now = now();
        let mut conds = conditions(vmi);
        let terminating = condition(
            "Ready",
            "False",
            "PodTerminating",
            "virt-launcher pod is terminating",
            None,
            Some(&now),
        );
        let mut updated = vmi.clone();
        if let Some(left) = self.ctx.time_left(&uid, SHUTTING_DOWN, delay) {
            if !has_condition(&conds, "Ready", "False", Some("PodTerminating")) {
                upsert_condition(&mut conds, terminating);
                if let Some(status) = status_mut(&mut updated) {
                    status.insert("conditions".into(), Value::Array(conds));
                    self.write(Some(updated)).await?;
                }
            }
            return Ok(Action::requeue(left));
        }
        upsert_condition(&mut conds, terminating);
        updated.metadata.finalizers =
            Some(finalizers_without(&vmi.metadata, VMI_FOREGROUND_FINALIZER));
        if let Some(status) = status_mut(&mut updated) {
            status.insert("conditions".into(), Value::Array(conds));
            enter_phase(status, vmi, if running { SUCCEEDED } else { FAILED }, &now);
            self.write(Some(updated)).await?;
        }
        Ok(Action::await_change())
    }

    /// A final VMI keeps no lifecycle finalizer; the VM controller's one goes too when no
    /// VM is left to record the outcome.
    async fn release(&self, vmi: &DynamicObject) -> Result<(), Error> {
        let mut finalizers = finalizers_without(&vmi.metadata, VMI_FOREGROUND_FINALIZER);
        if has_finalizer(&vmi.metadata, VM_CONTROLLER_FINALIZER) && self.owner_gone(vmi).await? {
            finalizers.retain(|f| f != VM_CONTROLLER_FINALIZER);
        }
        if finalizers.len() != vmi.finalizers().len() {
            let patch = json!({"metadata": {"finalizers": finalizers}});
            if patch_guarded(&self.vmis, vmi, patch).await?.is_some() {
                Counters::bump(&self.ctx.counters.vmi_writes);
            }
        }
        Ok(())
    }

    /// Whether the VM controlling this VMI no longer exists (or is another VM by now).
    async fn owner_gone(&self, vmi: &DynamicObject) -> Result<bool, Error> {
        let Some(owner) = vmi
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true) && r.kind == "VirtualMachine")
        else {
            return Ok(true);
        };
        // Live: a cached VM deleted a moment ago would keep this finalizer for good.
        let vm = self.ctx.vms(&self.ns).get_opt(&owner.name).await?;
        Ok(vm.is_none_or(|vm| vm.metadata.uid.as_deref() != Some(owner.uid.as_str())))
    }

    /// A guarded update of the whole VMI; `false` when there was nothing to write or the
    /// VMI is already gone.
    async fn write(&self, updated: Option<DynamicObject>) -> Result<bool, Error> {
        let Some(updated) = updated else {
            tracing::warn!(namespace = %self.ns, "VMI body is not a JSON object; leaving it alone");
            return Ok(false);
        };
        let written = replace_guarded(&self.vmis, &updated).await?.is_some();
        if written {
            Counters::bump(&self.ctx.counters.vmi_writes);
        }
        Ok(written)
    }
}

/// Ready=False while the guest is not up.
pub(super) fn not_running(now: &str) -> Value {
    condition(
        "Ready",
        "False",
        "GuestNotRunning",
        "Guest VM is not reported as running",
        None,
        Some(now),
    )
}

/// The condition a held start shows: (type, reason, message).
fn fault_condition(fault: StartFault) -> (&'static str, &'static str, &'static str) {
    match fault {
        StartFault::Unschedulable => (
            "PodScheduled",
            "Unschedulable",
            "0/1 nodes are available: 1 Insufficient devices.kubevirt.io/kvm.",
        ),
        StartFault::ErrImagePull => (
            "Synchronized",
            "ErrImagePull",
            "failed to pull image: not found",
        ),
    }
}

/// Sets `phase` and appends its transition timestamp.
pub(super) fn enter_phase(
    status: &mut Map<String, Value>,
    vmi: &DynamicObject,
    phase: &str,
    now: &str,
) {
    let mut stamps = vmi.data["status"]["phaseTransitionTimestamps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    stamps.push(json!({"phase": phase, "phaseTransitionTimestamp": now}));
    status.insert("phase".into(), json!(phase));
    status.insert("phaseTransitionTimestamps".into(), Value::Array(stamps));
}
