//! A stand-in for KubeVirt in a cluster that has only kube-apiserver and etcd: the
//! `virtualmachines` / `virtualmachineinstances` CRDs as KubeVirt ships them, and a
//! simulator that plays virt-controller and virt-handler for them.
//!
//! Everything here works on `DynamicObject` and raw JSON on purpose: it must behave like
//! KubeVirt does, not like the operator's typed model expects it to.

mod admission;
mod api;
mod context;
mod crds;
mod simulator;
mod status;
mod vm_controller;
mod vmi_controller;

use std::time::Duration;

use kube::core::{ApiResource, GroupVersionKind};

pub use admission::install_vm_admission;
pub use context::{Counters, SimulatorOptions, StartFault};
pub use crds::install_kubevirt_crds;
pub use simulator::{Simulator, SimulatorHandle, Virtctl};

/// API group of both kinds.
pub const GROUP: &str = "kubevirt.io";
/// Finalizer virt-controller puts on every VM and on every VMI it starts.
pub const VM_CONTROLLER_FINALIZER: &str = "kubevirt.io/virtualMachineControllerFinalize";
/// Finalizer virt-api's mutating webhook puts on every new VMI.
pub const VMI_FOREGROUND_FINALIZER: &str = "kubevirt.io/foregroundDeleteVirtualMachine";
/// Label virt-controller sets on a VMI once it is scheduled.
pub const NODE_NAME_LABEL: &str = "kubevirt.io/nodeName";
/// Annotation carrying the VM generation a VMI was started from.
pub const VM_GENERATION_ANNOTATION: &str = "kubevirt.io/vm-generation";
/// Annotations virt-api stamps on VMs and VMIs it has seen.
pub const LATEST_OBSERVED_API_VERSION: &str = "kubevirt.io/latest-observed-api-version";
pub const STORAGE_OBSERVED_API_VERSION: &str = "kubevirt.io/storage-observed-api-version";

/// `kubevirt.io/v1` VirtualMachine, for `Api::namespaced_with`.
pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

/// `kubevirt.io/v1` VirtualMachineInstance, for `Api::namespaced_with`.
pub fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    )
}

/// What can go wrong installing the CRDs or inside one simulator pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API call failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("waiting for CRD {name} failed: {source}")]
    Wait {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("CRD {name} was not established within {timeout:?}")]
    NotEstablished { name: String, timeout: Duration },
    #[error("could not build object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the VMI is not in a state this change applies to: {0}")]
    NotReported(String),
}

impl Error {
    /// A lost optimistic-concurrency race: retry soon, nothing is wrong.
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.is_conflict())
    }
}
