//! Warm pools as a user and an auditor see them: pool YAML, waiting for a pool to fill,
//! and the invariants every pool test checks (no VM with two desks, none left unowned).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cyberdesk_operator::model::{Cyberdesk, CyberdeskPool, VirtualMachine, VmSource, names};
use kube::Api;
use kube::api::ListParams;

use crate::desks::Apis;
use crate::wait::eventually;

pub fn pool_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: CyberdeskPool\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec: {spec}\n"
    )
}

/// Waits until the pool's status shows `ready` ready VMs and none booting.
pub async fn wait_pool_ready(pools: &Api<CyberdeskPool>, name: &str, ready: i32, within: Duration) {
    let what = format!("pool {name} with {ready} ready VMs");
    eventually(within, &what, || async {
        let status = pools.get_opt(name).await.ok()??.status?;
        (status.ready == ready && status.booting == 0).then_some(())
    })
    .await;
}

/// The VMs of the namespace that were booted for `pool`.
pub async fn pool_vms(apis: &Apis, pool: &str) -> Vec<VirtualMachine> {
    let selector = format!("{}={pool}", names::LABEL_POOL);
    apis.vms
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list VMs")
        .items
}

/// Creates desks `d00`, `d01`, … (`n` of them) naming `pool`, all at once, as a
/// platform's API would send them.
pub async fn create_pool_desks(apis: &Apis, n: usize, pool: &str) -> Result<(), kube::Error> {
    let creates = (0..n).map(|i| {
        let desks = apis.desks.clone();
        async move {
            let desk: Cyberdesk = serde_json::from_value(serde_json::json!({
                "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                "metadata": {"name": format!("d{i:02}")},
                "spec": {"timeoutMs": 600000, "pool": pool}
            }))
            .expect("a desk");
            desks.create(&Default::default(), &desk).await
        }
    });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    Ok(())
}

/// What the desks of a namespace got, checked against the VMs there: every desk has its
/// own VM (none shared), every VM has exactly one owner, and every claimed VM belongs to
/// the desk its labels name. Returns (desks from the pool, cold desks).
pub async fn audit(apis: &Apis) -> (usize, usize) {
    let desks = apis
        .desks
        .list(&ListParams::default())
        .await
        .expect("desks")
        .items;
    let vms = apis
        .vms
        .list(&ListParams::default())
        .await
        .expect("vms")
        .items;
    let mut refs = BTreeSet::new();
    let (mut pooled, mut cold) = (0, 0);
    let uid_of: BTreeMap<String, String> = desks
        .iter()
        .filter_map(|d| Some((d.metadata.uid.clone()?, d.metadata.name.clone()?)))
        .collect();
    for desk in &desks {
        let name = desk.metadata.name.clone().unwrap_or_default();
        let status = desk.status.clone().unwrap_or_default();
        let vm = status.virtual_machine_ref.clone().unwrap_or_default();
        assert!(!vm.is_empty(), "desk {name} has no VM: {status:?}");
        assert!(refs.insert(vm.clone()), "VM {vm} is the VM of two desks");
        match status.source {
            Some(VmSource::Pool) => pooled += 1,
            Some(VmSource::Cold) => cold += 1,
            None => panic!("desk {name} has no source: {status:?}"),
        }
    }
    for vm in &vms {
        let name = vm.metadata.name.clone().unwrap_or_default();
        let owners = vm.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "VM {name} has owners {owners:?}");
        if vm.is_claimed_from_pool() {
            let owner = &owners[0];
            assert_eq!(
                owner.kind, "Cyberdesk",
                "claimed VM {name} is owned by {owner:?}"
            );
            assert_eq!(
                uid_of.get(&owner.uid).map(String::as_str),
                vm.instance(),
                "claimed VM {name}'s owner and label disagree"
            );
            assert!(
                refs.contains(name.as_str()),
                "claimed VM {name} is no desk's VM"
            );
        } else if vm.pool().is_some() {
            assert_eq!(owners[0].kind, "CyberdeskPool", "pool VM {name}");
        } else {
            assert!(
                refs.contains(name.as_str()),
                "cold VM {name} is no desk's VM"
            );
        }
    }
    (pooled, cold)
}
