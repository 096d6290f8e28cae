//! The few KubeVirt fields the operator reads and writes. Everything else is kept as-is
//! (`extra`), and every field tolerates `null`, because real KubeVirt writes conditions
//! with `lastTransitionTime: null` and omits what it has not set yet.

use std::collections::BTreeMap;

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names;

/// `kubevirt.io/v1` VirtualMachine. Only its spec.runStrategy is ours to set; the rest of
/// the spec comes from the rendered template.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    plural = "virtualmachines",
    namespaced,
    status = "VirtualMachineStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    /// Deprecated by KubeVirt; read only to report conflicts, never written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<KubevirtCondition>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// `kubevirt.io/v1` VirtualMachineInstance: created and owned by virt-controller, read-only
/// for the operator.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    plural = "virtualmachineinstances",
    namespaced,
    status = "VirtualMachineInstanceStatus",
    schema = "disabled"
)]
pub struct VirtualMachineInstanceSpec {
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<KubevirtCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<VmiInterface>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A KubeVirt condition: like metav1.Condition but with nullable times and optional text.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubevirtCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub last_transition_time: Option<String>,
    #[serde(default)]
    pub last_probe_time: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmiInterface {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn condition_true(conditions: &Option<Vec<KubevirtCondition>>, type_: &str) -> bool {
    conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

impl VirtualMachineInstance {
    pub fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }

    /// The first interface's address, as KubeVirt's own IP printer column shows it.
    pub fn ip_address(&self) -> Option<&str> {
        let iface = self.status.as_ref()?.interfaces.as_ref()?.first()?;
        iface
            .ip_address
            .as_deref()
            .or_else(|| iface.ip_addresses.as_ref()?.first().map(String::as_str))
    }

    pub fn is_ready(&self) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| condition_true(&s.conditions, "Ready"))
    }
}

impl VirtualMachine {
    pub fn printable_status(&self) -> Option<&str> {
        self.status.as_ref()?.printable_status.as_deref()
    }

    pub fn is_ready(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.ready == Some(true))
    }

    pub fn run_strategy(&self) -> Option<&str> {
        self.spec.run_strategy.as_deref()
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// The warm pool this VM was booted for, if any.
    pub fn pool(&self) -> Option<&str> {
        self.label(names::LABEL_POOL)
    }

    /// A pool VM no desk has claimed yet.
    pub fn is_available_in_pool(&self) -> bool {
        self.pool().is_some()
            && self.label(names::LABEL_POOL_STATE) == Some(names::POOL_STATE_AVAILABLE)
    }

    /// A pool VM the pool is taking back to delete it.
    pub fn is_retiring_from_pool(&self) -> bool {
        self.pool().is_some()
            && self.label(names::LABEL_POOL_STATE) == Some(names::POOL_STATE_RETIRING)
    }

    /// A pool VM that a desk claimed.
    pub fn is_claimed_from_pool(&self) -> bool {
        self.pool().is_some()
            && self.label(names::LABEL_POOL_STATE) == Some(names::POOL_STATE_CLAIMED)
    }

    /// When a desk claimed this pool VM (its lifetime starts there).
    pub fn claimed_at(&self) -> Option<jiff::Timestamp> {
        self.metadata
            .annotations
            .as_ref()?
            .get(names::ANNOTATION_CLAIMED_AT)?
            .parse()
            .ok()
    }

    /// The desk (by name) a VM belongs to by its instance label.
    pub fn instance(&self) -> Option<&str> {
        self.label(names::LABEL_INSTANCE)
    }
}

/// printableStatus values that mean the desktop cannot come up without help.
pub const VM_ERROR_STATES: &[&str] = &[
    "CrashLoopBackOff",
    "ErrorUnschedulable",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrorPvcNotFound",
    "DataVolumeError",
];

#[cfg(test)]
mod tests;
