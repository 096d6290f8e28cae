//! How a warm pool looks after its VMs, seen from outside: at most `maxBooting` VMs boot at
//! once while it fills; an unclaimed VM in an error state is replaced, counted and
//! announced; scaling down takes VMs back through `pool-state=retiring` before deleting
//! them; a claim that loses its VM counts a conflict and tries the next.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, apply};
use cyberdesk_integration::desks::{Apis, desk_namespace, wait_event};
use cyberdesk_integration::kubevirt::SimulatorOptions;
use cyberdesk_integration::operator::{Scrape, SharedOperator, webhook_operator};
use cyberdesk_integration::pools::{pool_vms, pool_yaml, wait_pool_ready};
use cyberdesk_integration::wait::{eventually, throughout};
use cyberdesk_operator::model::{CyberdeskPool, VirtualMachine, names};
use futures::StreamExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;

async fn setup() -> (Cluster, SharedOperator) {
    webhook_operator(&[]).await
}

/// Pool VMs that exist but whose VMI is not yet `Running` with `Ready=True`: booting, as
/// the simulated KubeVirt reports them. The VMs are listed before their VMIs, so a VM
/// that turns ready in between counts as ready and a VM created in between is not seen:
/// the count is never too high.
async fn booting(apis: &Apis, pool: &str) -> usize {
    let vms = pool_vms(apis, pool).await;
    let mut n = 0;
    for vm in vms {
        let name = vm.metadata.name.unwrap_or_default();
        let ready = apis
            .vmis
            .get_opt(&name)
            .await
            .expect("read VMI")
            .and_then(|vmi| vmi.status)
            .is_some_and(|s| {
                s.phase.as_deref() == Some("Running")
                    && s.conditions
                        .iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if !ready {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_pool_boots_at_most_max_booting_vms_at_once() {
    let (c, _op) = setup().await;
    // Each boot takes 3 s: long enough to see who boots together.
    let slow = SimulatorOptions::default().with_phase_delay(Duration::from_secs(1));
    let (ns, apis, _sim) = desk_namespace(&c, "pool-booting", slow).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "steady", "{size: 6, maxBooting: 2}"));
    let most = Arc::new(Mutex::new(0));
    let seen = most.clone();
    let fill = async {
        wait_pool_ready(&pools, "steady", 6, Duration::from_secs(90)).await;
    };
    let watch = throughout(Duration::from_secs(90), || {
        let seen = seen.clone();
        let apis = &apis;
        async move {
            let now = booting(apis, "steady").await;
            let mut most = seen.lock().unwrap_or_else(|e| e.into_inner());
            *most = (*most).max(now);
            assert!(now <= 2, "{now} pool VMs booting at once with maxBooting 2");
        }
    });
    // The watch runs until the pool is full.
    tokio::select! {
        _ = fill => {}
        _ = watch => panic!("the pool did not fill within 90 s"),
    }
    assert_eq!(pool_vms(&apis, "steady").await.len(), 6);
    // It did boot in parallel, up to the limit.
    assert_eq!(*most.lock().unwrap_or_else(|e| e.into_inner()), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_vm_in_an_error_state_is_replaced_counted_and_announced() {
    let (c, op) = setup().await;
    // A crashed VMI is restarted only after a minute: meanwhile its VM shows
    // CrashLoopBackOff, an error state.
    let crashing = SimulatorOptions {
        restart_backoff: Duration::from_secs(60),
        ..SimulatorOptions::default()
    };
    let (ns, apis, sim) = desk_namespace(&c, "pool-failed", crashing).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 1}"));
    wait_pool_ready(&pools, "warm", 1, Duration::from_secs(60)).await;
    let broken = pool_vms(&apis, "warm").await[0]
        .metadata
        .name
        .clone()
        .expect("name");
    let failed = r#"cyberdesk_pool_vms_replaced_total{reason="failed"}"#;
    let before = op.metric(failed).expect("the failed series");

    sim.set_vmi_phase(&ns, &broken, "Failed")
        .await
        .expect("crash the VMI");
    eventually(Duration::from_secs(60), "the broken VM gone", || async {
        apis.vms
            .get_opt(&broken)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    wait_pool_ready(&pools, "warm", 1, Duration::from_secs(60)).await;
    let now: Vec<String> = pool_vms(&apis, "warm")
        .await
        .into_iter()
        .filter_map(|vm| vm.metadata.name)
        .collect();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], broken);
    assert_eq!(op.metric(failed), Some(before + 1.0));
    let event = wait_event(
        &c,
        &ns,
        "warm",
        "VirtualMachineFailed",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(event.type_, "Warning", "{event:?}");
    assert!(event.note.contains(&broken), "{event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_retires_each_vm_before_deleting_it() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-retire", SimulatorOptions::default()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "shrink", "{size: 4}"));
    wait_pool_ready(&pools, "shrink", 4, Duration::from_secs(60)).await;

    // Every deleted VM as the watch last saw it, by name: its pool-state label.
    let deleted: Arc<Mutex<BTreeMap<String, Option<String>>>> = Arc::default();
    let record = deleted.clone();
    let vms: Api<VirtualMachine> = Api::namespaced(c.client().await, &ns);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let mut started_tx = Some(started_tx);
    let watch = tokio::spawn(async move {
        let mut events = watcher(vms, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::InitDone) => {
                    if let Some(tx) = started_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(watcher::Event::Delete(vm)) => {
                    let state = vm
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(names::LABEL_POOL_STATE).cloned());
                    let name = vm.metadata.name.unwrap_or_default();
                    record
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, state);
                }
                _ => {}
            }
        }
    });
    started_rx.await.expect("the VM watch started");

    pools
        .patch(
            "shrink",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"size": 1}})),
        )
        .await
        .expect("scale down");
    eventually(Duration::from_secs(60), "three VMs deleted", || async {
        let seen = deleted.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (seen.len() >= 3).then_some(())
    })
    .await;
    wait_pool_ready(&pools, "shrink", 1, Duration::from_secs(30)).await;
    watch.abort();
    let seen = deleted.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (vm, state) in &seen {
        assert_eq!(
            state.as_deref(),
            Some(names::POOL_STATE_RETIRING),
            "{vm} was deleted without being retired first: {seen:?}"
        );
    }
    assert_eq!(pool_vms(&apis, "shrink").await.len(), 1);
}

/// Deletes the named cluster-scoped admission objects when dropped.
struct RemovePolicy(Cluster, String);

impl Drop for RemovePolicy {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = self
                .0
                .kubectl()
                .run(&["delete", kind, &self.1, "--ignore-not-found"], None);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_loses_its_vm_counts_a_conflict_and_tries_the_next() {
    let (c, op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-conflict", SimulatorOptions::default()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "contested", "{size: 2}"));
    wait_pool_ready(&pools, "contested", 2, Duration::from_secs(60)).await;

    // Every claim of this pool's VMs is refused by the apiserver with 422, the answer a
    // claim gets when its test finds the VM taken by another desk's claim first.
    let name = format!("claims-lost-{ns}");
    let _remove = RemovePolicy(c.clone(), name.clone());
    let taken = format!(
        "has(object.metadata.labels) && object.metadata.labels[?'{state}'].orValue('') == 'claimed' && object.metadata.labels[?'{pool}'].orValue('') == 'contested'",
        state = names::LABEL_POOL_STATE,
        pool = names::LABEL_POOL,
    );
    let policy = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                "resourceRules": [{
                    "apiGroups": ["kubevirt.io"], "apiVersions": ["v1"],
                    "operations": ["UPDATE"], "resources": ["virtualmachines"],
                }],
            },
            "validations": [{
                "expression": format!("!({taken})"),
                "message": "another desk claimed this VirtualMachine first",
                "reason": "Invalid",
            }],
        },
    });
    let binding = serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    });
    apply(&c, &policy.to_string());
    apply(&c, &binding.to_string());
    let probe = pool_vms(&apis, "contested").await[0]
        .metadata
        .name
        .clone()
        .expect("name");
    eventually(Duration::from_secs(30), "the policy in force", || async {
        let out = c
            .kubectl()
            .run(
                &[
                    "label",
                    "vm",
                    &probe,
                    "-n",
                    &ns,
                    &format!("{}=claimed", names::LABEL_POOL_STATE),
                    "--overwrite",
                    "--dry-run=server",
                ],
                None,
            )
            .ok()?;
        (!out.success && out.stderr.contains("claimed this VirtualMachine first")).then_some(())
    })
    .await;

    let conflict = r#"cyberdesk_pool_claims_total{result="conflict"}"#;
    let miss = r#"cyberdesk_pool_claims_total{result="miss"}"#;
    let (conflicts, misses) = (
        op.metric(conflict).expect("conflict series"),
        op.metric(miss).expect("miss series"),
    );
    apply(
        &c,
        &cyberdesk_integration::desks::desk_yaml(
            &ns,
            "late",
            "{timeoutMs: 600000, pool: contested}",
        ),
    );
    let desk = apis
        .wait_phase("late", "Running", Duration::from_secs(60))
        .await;
    let status = desk.status.expect("status");
    // Both ready VMs were tried, both lost: the desk booted its own.
    assert_eq!(
        status.source,
        Some(cyberdesk_operator::model::VmSource::Cold),
        "{status:?}"
    );
    assert_eq!(op.metric(conflict), Some(conflicts + 2.0));
    assert_eq!(op.metric(miss), Some(misses + 1.0));
    for vm in pool_vms(&apis, "contested").await {
        let labels = vm.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(names::LABEL_POOL_STATE).map(String::as_str),
            Some(names::POOL_STATE_AVAILABLE),
            "{labels:?}"
        );
    }
}
