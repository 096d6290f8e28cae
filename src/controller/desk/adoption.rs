//! Adopting the desks the previous (kopf) operator left (pure decisions; `writes.rs` makes
//! the API calls). Such a desk carries kopf's finalizer and/or its status block
//! `status.cyberdesk_create` (one this operator did not write), and its VM has neither an ownerReference nor this operator's labels.
//! Adoption takes that VM over (labels, and an ownerReference when it lives beside the desk)
//! instead of creating a second one, keeps the desk's original expiry, and swaps kopf's
//! finalizer for this operator's.
//!
//! Who may be adopted is narrow, because a desk's name is chosen by whoever creates it:
//! only desks in the namespaces the operator is limited to (`--desk-namespaces`, where the
//! previous platform kept its desks; the caller checks), and only a VM whose labels say it
//! was made for a desk of that very name.

pub mod writes;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::model::{Cyberdesk, VirtualMachine, names};
use crate::time;

/// The finalizer kopf puts on every object it handles.
pub const KOPF_FINALIZER: &str = "kopf.zalando.org/KopfFinalizerMarker";

pub fn has_kopf_finalizer(desk: &Cyberdesk) -> bool {
    desk.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == KOPF_FINALIZER)
}

/// Was this desk the previous operator's and not adopted yet? kopf's finalizer, or a
/// status block this operator did not write (it marks its own, [`LEGACY_WRITER`]) and no
/// VM reference of this operator's (which every desk it made a VM for has). The block
/// alone counts for a desk whose finalizer was swapped by a pass that ended before it
/// adopted the VM.
pub fn is_legacy(desk: &Cyberdesk) -> bool {
    let status = desk.status.as_ref();
    let foreign_block = status
        .and_then(|s| s.legacy.as_ref())
        .is_some_and(|l| l.written_by.as_deref() != Some(LEGACY_WRITER));
    let own_ref = status.is_some_and(|s| s.virtual_machine_ref.is_some());
    has_kopf_finalizer(desk) || (foreign_block && !own_ref)
}

/// What this operator writes into `status.cyberdesk_create.writtenBy`: a block carrying it
/// is never taken for the previous operator's.
pub const LEGACY_WRITER: &str = names::MANAGED_BY_VALUE;

/// The VM name the previous operator recorded.
pub fn recorded_vm_name(desk: &Cyberdesk) -> Option<&str> {
    desk.status
        .as_ref()?
        .legacy
        .as_ref()?
        .virtual_machine_ref
        .as_deref()
        .filter(|n| !n.is_empty())
}

/// May this VM be adopted for this desk? Only one the previous operator labelled for a
/// desk of this name (`app=cyberdesk`, `cyberdesk-instance=<desk>`) and nobody else
/// holds: no ownerReference, no desk-uid or desk-namespace label of another desk, no pool.
/// A VM that merely has the desk's name is never taken.
pub fn adoptable(vm: &VirtualMachine, desk: &Cyberdesk) -> bool {
    let labels = vm.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let unowned = vm
        .metadata
        .owner_references
        .as_ref()
        .is_none_or(Vec::is_empty);
    let made_for_it = label(names::LABEL_APP) == Some(names::LABEL_APP_VALUE)
        && label(names::LABEL_INSTANCE).is_some_and(|n| Some(n) == desk.metadata.name.as_deref());
    let uid_ok =
        label(names::LABEL_DESK_UID).is_none_or(|u| Some(u) == desk.metadata.uid.as_deref());
    let ns_ok = label(names::LABEL_DESK_NAMESPACE)
        .is_none_or(|n| Some(n) == desk.metadata.namespace.as_deref());
    let pooled = label(names::LABEL_POOL).is_some();
    unowned && made_for_it && uid_ok && ns_ok && !pooled && vm.metadata.deletion_timestamp.is_none()
}

/// The JSON patch that adopts `vm` for the desk: guarded by the VM's resourceVersion, it
/// adds this operator's labels (`labels`) to the VM and to its template (so the VMIs it
/// starts from now on carry them) and, beside the desk, the ownerReference.
pub fn adopt_patch(
    vm: &VirtualMachine,
    labels: &std::collections::BTreeMap<String, String>,
    owner_reference: Option<&Value>,
) -> Value {
    let rv = vm.metadata.resource_version.clone().unwrap_or_default();
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
    let mut all = vm.metadata.labels.clone().unwrap_or_default();
    all.extend(labels.clone());
    ops.push(json!({"op": "add", "path": "/metadata/labels", "value": all}));
    if let Some(Value::Object(template)) = &vm.spec.template {
        let mut meta = template
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut template_labels = meta
            .get("labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (k, v) in labels {
            template_labels.insert(k.clone(), Value::String(v.clone()));
        }
        meta.insert("labels".into(), Value::Object(template_labels));
        ops.push(json!({"op": "add", "path": "/spec/template/metadata", "value": meta}));
    }
    if let Some(owner) = owner_reference {
        ops.push(json!({"op": "add", "path": "/metadata/ownerReferences", "value": [owner]}));
    }
    Value::Array(ops)
}

/// The desk's finalizers with kopf's replaced by this operator's (kept in place, once).
pub fn swapped_finalizers(desk: &Cyberdesk) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in desk.metadata.finalizers.iter().flatten() {
        let f = if f == KOPF_FINALIZER {
            names::FINALIZER
        } else {
            f.as_str()
        };
        if !out.iter().any(|o| o == f) {
            out.push(f.to_string());
        }
    }
    out
}

/// When the lifetime of an adopted desk started, such that its expiry stays the one the
/// previous operator recorded: `expiryTime - timeout`, else its recorded `startTime`.
pub fn legacy_start(desk: &Cyberdesk, timeout_ms: i64) -> Option<Timestamp> {
    let legacy = desk.status.as_ref()?.legacy.as_ref()?;
    if let Some(expiry) = legacy.expiry_time.as_deref().and_then(time::parse) {
        return expiry
            .checked_sub(jiff::SignedDuration::from_millis(timeout_ms.max(0)))
            .ok();
    }
    legacy.start_time.as_deref().and_then(time::parse)
}

#[cfg(test)]
mod tests;
