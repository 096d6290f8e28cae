//! Whose a VM is: the check that a VM belongs to a desk, and the ownerReference a desk's
//! VM carries.

use kube::Resource;
use serde_json::Value;

use crate::controller::error::Error;
use crate::model::{Cyberdesk, Placement, VirtualMachine, names};

/// Is this VM ours to manage: controlled by this very Cyberdesk (same uid)? Beside its
/// desk a VM says so by its ownerReference; in another namespace (`--vm-namespace`), where
/// it can have none, by its desk-uid label.
pub fn owned_by(vm: &VirtualMachine, desk: &Cyberdesk) -> bool {
    let Some(uid) = desk.metadata.uid.as_deref() else {
        return false;
    };
    match vm.metadata.owner_references.as_deref() {
        Some(owners) if !owners.is_empty() => {
            owners.iter().any(|o| o.uid == uid && o.kind == "Cyberdesk")
        }
        _ => vm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(names::LABEL_DESK_UID))
            .is_some_and(|label| label == uid),
    }
}

/// The ownerReference a VM of this desk carries: none when it lives in another namespace
/// (`--vm-namespace`), where Kubernetes would take it for a missing owner.
pub fn owner_reference(
    cd: &Cyberdesk,
    placement: &Placement,
    ns: &str,
) -> Result<Option<Value>, Error> {
    if placement.elsewhere(ns) {
        return Ok(None);
    }
    let owner = cd.controller_owner_ref(&()).ok_or(Error::NoUid)?;
    serde_json::to_value(owner)
        .map(Some)
        .map_err(|source| Error::Serialization {
            what: "ownerReference",
            source,
        })
}
