//! Taking a desk over from the previous (kopf) operator: the API calls behind the plan's
//! `TakeOverFinalizer`, `FindLegacyVm` and `Adopt` steps. What to take over is decided in
//! `adoption.rs` (pure); this only carries it out.

use kube::ResourceExt;
use kube::api::{Api, Patch};
use serde_json::json;

use crate::controller::adoption;
use crate::controller::error::Error;
use crate::controller::finalizers;
use crate::controller::reconcile::{Context, owner_reference, plain_pp};
use crate::model::placement::vm_labels;
use crate::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance, names};

/// Replaces kopf's finalizer with this operator's in one patch guarded by the
/// resourceVersion the pass read; the desk as stored.
pub(super) async fn take_over_finalizer(
    api: &Api<Cyberdesk>,
    cd: &Cyberdesk,
) -> Result<Cyberdesk, Error> {
    let ops = finalizers::replacing(cd, &adoption::swapped_finalizers(cd));
    finalizers::patch(api, cd, ops).await
}

/// The previous operator's VM of a legacy desk, read live: by the name the desk recorded
/// (else this operator's VM name), else the one VM labelled `cyberdesk-instance=<desk>`.
pub(super) async fn find_legacy_vm(
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

/// Claims the previous operator's VM: this operator's labels, and the ownerReference when
/// it lives beside the desk; guarded by the VM's resourceVersion.
pub(super) async fn claim_vm(
    vms: &Api<VirtualMachine>,
    vm: &VirtualMachine,
    cd: &Cyberdesk,
    ctx: &Context,
    ns: &str,
) -> Result<VirtualMachine, Error> {
    let uid = cd.uid().ok_or(Error::NoUid)?;
    let owner = owner_reference(cd, ctx, ns)?;
    let labels = vm_labels(ns, &cd.name_any(), &uid);
    let ops = adoption::claim_patch(vm, &labels, owner.as_ref());
    let claimed = super::patch::json(vms, &vm.name_any(), ops, "adoption patch").await?;
    // The running VMI got its labels from the template before: label it too, so its watch
    // sees it and maps it to the desk.
    let vm_ns = claimed.namespace().unwrap_or_default();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), &vm_ns);
    let merge = json!({"metadata": {"labels": labels}});
    match vmis
        .patch(&claimed.name_any(), &plain_pp(), &Patch::Merge(merge))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(claimed)
}
