//! How a warm pool looks after its VMs, seen from outside: at most `maxBooting` VMs boot at
//! once while it fills; an unclaimed VM in an error state is replaced, counted and
//! announced; scaling down takes VMs back through `pool-state=retiring` before deleting
//! them.

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
