//! Adopting a desk of the previous (kopf) operator: the API calls behind the plan's
//! `AdoptFinalizer`, `FindLegacyVm` and `Adopt` steps. What to adopt is decided in
//! `adoption.rs` (pure); this only carries it out.

use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;

use crate::controller::context::Shared;
use crate::controller::desk::adoption;
use crate::controller::error::Error;
use crate::controller::finalizers;
use crate::controller::ownership::owner_reference;
use crate::controller::patch::{self, plain_params};
use crate::model::placement::vm_labels;
use crate::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance, names};

/// Replaces kopf's finalizer with this operator's in one patch guarded by the
/// resourceVersion the pass read; the desk as stored.
pub async fn adopt_finalizer(api: &Api<Cyberdesk>, cd: &Cyberdesk) -> Result<Cyberdesk, Error> {
    let ops = finalizers::replacing(cd, &adoption::swapped_finalizers(cd));
    finalizers::patch(api, cd, ops).await
}

/// The previous operator's VM of a legacy desk, read live: by the name the desk recorded
/// (else this operator's VM name), else the one VM labelled `cyberdesk-instance=<desk>`.
pub async fn find_legacy_vm(
    vms: &Api<VirtualMachine>,
    cd: &Cyberdesk,
    vm_name: &str,
) -> Result<Option<VirtualMachine>, Error> {
    let by_name = adoption::recorded_vm_name(cd).unwrap_or(vm_name);
    if let Some(vm) = vms.get_opt(by_name).await? {
        return Ok(Some(vm));
    }
    let selector = format!("{}={}", names::LABEL_INSTANCE, cd.name_any());
    let mut found = vms
        .list(&kube::api::ListParams::default().labels(&selector))
        .await?
        .items;
    // Several VMs claiming one desk: adopt none of them.
    Ok(if found.len() == 1 { found.pop() } else { None })
}

/// Adopts the previous operator's VM: this operator's labels, and the ownerReference when
/// it lives beside the desk; guarded by the VM's resourceVersion.
pub async fn adopt_vm(
    vms: &Api<VirtualMachine>,
    vm: &VirtualMachine,
    cd: &Cyberdesk,
    ctx: &Shared,
    ns: &str,
) -> Result<VirtualMachine, Error> {
    let uid = cd.uid().ok_or(Error::NoUid)?;
    let owner = owner_reference(cd, &ctx.placement, ns)?;
    let labels = vm_labels(ns, &cd.name_any(), &uid);
    let ops = adoption::adopt_patch(vm, &labels, owner.as_ref());
    let adopted = patch::json(vms, &vm.name_any(), ops, "adoption patch").await?;
    // The running VMI got its labels from the template before: label it too, so its watch
    // sees it and maps it to the desk.
    let vm_ns = adopted.namespace().unwrap_or_default();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &vm_ns);
    let merge = json!({"metadata": {"labels": labels}});
    match vmis
        .patch(&adopted.name_any(), &plain_params(), &Patch::Merge(merge))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(adopted)
}
