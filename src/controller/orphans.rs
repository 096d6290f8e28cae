//! The orphan sweep (leader only, with `--vm-namespace`): a VM in the VM namespace carries
//! no ownerReference, so nothing in Kubernetes deletes it when its desk disappears without
//! the finalizer's cleanup (a finalizer stripped by hand, a namespace force-deleted). The
//! sweep finds managed VMs whose desk (by uid) is not in the desk cache, waits a grace
//! period, confirms with live reads and deletes them. A VM without the operator's labels
//! is never seen, so never touched.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::controller::cache::Caches;
use crate::events::Announcer;
use crate::metrics::Metrics;
use crate::model::{Cyberdesk, VirtualMachine, names};

/// A VM the sweep suspects: its uid and the desk uid its label names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suspect {
    pub namespace: String,
    pub name: String,
    pub vm_uid: String,
    pub desk_uid: String,
}

/// The VMs with a desk-uid label and no owner reference whose desk is not among `desks`
/// (the uids of every cached desk). VMs already being deleted are left to finish.
pub fn suspects<'a>(
    vms: impl IntoIterator<Item = &'a VirtualMachine>,
    desks: &HashSet<String>,
) -> Vec<Suspect> {
    vms.into_iter()
        .filter(|vm| vm.metadata.deletion_timestamp.is_none())
        .filter(|vm| {
            vm.metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
        })
        .filter_map(|vm| {
            let desk_uid = vm.labels().get(names::LABEL_DESK_UID)?;
            if desks.contains(desk_uid) {
                return None;
            }
            Some(Suspect {
                namespace: vm.namespace()?,
                name: vm.name_any(),
                vm_uid: vm.uid()?,
                desk_uid: desk_uid.clone(),
            })
        })
        .collect()
}

/// Since when each suspect has been seen without its desk.
#[derive(Debug, Default)]
pub struct Suspicion {
    since: HashMap<String, Instant>,
}

impl Suspicion {
    /// Records this sweep's suspects and returns those suspected for at least `grace`. A VM
    /// no longer suspected (its desk showed up, or it is gone) is forgotten.
    pub fn due(&mut self, suspects: Vec<Suspect>, now: Instant, grace: Duration) -> Vec<Suspect> {
        let seen: HashSet<&str> = suspects.iter().map(|s| s.vm_uid.as_str()).collect();
        self.since.retain(|uid, _| seen.contains(uid.as_str()));
        suspects
            .into_iter()
            .filter(|s| {
                let first = *self.since.entry(s.vm_uid.clone()).or_insert(now);
                now.saturating_duration_since(first) >= grace
            })
            .collect()
    }

    pub fn forget(&mut self, vm_uid: &str) {
        self.since.remove(vm_uid);
    }
}

/// How often the sweep looks: often enough that a VM goes soon after its grace period.
pub fn period(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Runs the sweep until `stop`.
pub async fn sweep(
    client: kube::Client,
    caches: Caches,
    grace: Duration,
    metrics: Metrics,
    announcer: Announcer,
    stop: CancellationToken,
) {
    let mut suspicion = Suspicion::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(period(grace)) => {}
        }
        let desks: HashSet<String> = caches
            .desks
            .state()
            .iter()
            .filter_map(|d| d.uid())
            .collect();
        let vms = caches.vms.all();
        let due = suspicion.due(suspects(&vms, &desks), Instant::now(), grace);
        for suspect in due {
            match remove_if_orphaned(&client, &suspect, &announcer).await {
                Ok(true) => {
                    metrics.orphans_deleted.inc();
                    suspicion.forget(&suspect.vm_uid);
                }
                Ok(false) => suspicion.forget(&suspect.vm_uid),
                // Looked at again next sweep.
                Err(e) => {
                    tracing::warn!(vm = %suspect.name, namespace = %suspect.namespace, error = %e, "orphan sweep could not check the VirtualMachine")
                }
            }
        }
    }
}

/// Confirms with live reads that the suspect is still the same VM and that its desk is
/// gone (a cache may lag), then deletes exactly that VM (uid precondition). True when it
/// deleted it.
async fn remove_if_orphaned(
    client: &kube::Client,
    suspect: &Suspect,
    announcer: &Announcer,
) -> Result<bool, kube::Error> {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &suspect.namespace);
    let Some(vm) = vms.get_opt(&suspect.name).await? else {
        return Ok(false);
    };
    if vm.uid().as_deref() != Some(suspect.vm_uid.as_str()) {
        return Ok(false);
    }
    let labels = vm.labels();
    let desk = labels.get(names::LABEL_INSTANCE);
    let desk_ns = labels
        .get(names::LABEL_DESK_NAMESPACE)
        .unwrap_or(&suspect.namespace);
    if let Some(desk) = desk {
        let desks: Api<Cyberdesk> = Api::namespaced(client.clone(), desk_ns);
        let alive = desks
            .get_opt(desk)
            .await?
            .is_some_and(|d| d.uid().as_deref() == Some(suspect.desk_uid.as_str()));
        if alive {
            return Ok(false);
        }
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(suspect.vm_uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match vms.delete(&suspect.name, &params).await {
        Ok(_) => {}
        // Gone already, or replaced by another VM of that name: not ours to delete.
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(false),
        Err(e) => return Err(e),
    }
    let desk_name = desk.map(String::as_str).unwrap_or("?");
    tracing::warn!(vm = %suspect.name, namespace = %suspect.namespace, cyberdesk = %desk_name, desk_namespace = %desk_ns, "deleted an orphaned VirtualMachine: its Cyberdesk is gone");
    announcer.announce(
        vm.object_ref(&()),
        Event {
            type_: EventType::Warning,
            reason: "OrphanDeleted".into(),
            note: Some(format!(
                "Cyberdesk {desk_ns}/{desk_name} (uid {}) is gone; deleted its VirtualMachine",
                suspect.desk_uid
            )),
            action: "Delete".into(),
            secondary: None,
        },
    );
    Ok(true)
}

#[cfg(test)]
mod tests;
