//! Restart safety: the operator is SIGKILLed at arbitrary moments while 50 desks are
//! created; after a clean restart there is exactly one VM per desk, and once every desk is
//! deleted no VM is left.

use std::collections::BTreeSet;
use std::time::Duration;

use cyberdesk_integration::e2e::{Apis, desk_yaml, eventually, install_everything};
use cyberdesk_integration::harness::{OperatorProcess, reconciler_only_flags};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::shared::{Cluster, cluster, namespace};
use kube::api::{DeleteParams, ListParams};

const DESKS: usize = 50;

fn start(c: &Cluster, n: usize) -> OperatorProcess {
    let args = reconciler_only_flags(false);
    OperatorProcess::start(c, &format!("restart-{n}"), &args)
}

/// A small deterministic generator, so a failure can be replayed (seed in the output).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[tokio::test]
async fn sigkill_during_creation_leaves_exactly_one_vm_per_desk() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "restart").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");

    let mut generation = 0;
    let mut op = start(&c, generation);
    let all: String = (0..DESKS)
        .map(|i| {
            format!(
                "---\n{}",
                desk_yaml(&ns, &format!("d{i:02}"), "{timeoutMs: 600000}")
            )
        })
        .collect();
    // Apply in five batches, killing the operator at a random moment during each.
    for batch in all
        .split("---\n")
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .chunks(10)
    {
        let out = c
            .kubectl()
            .apply(&batch.join("---\n"), &[])
            .expect("kubectl");
        assert!(out.success, "{}", out.stderr);
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 1500)).await;
        op.signal(libc::SIGKILL);
        assert!(op.wait_exit(Duration::from_secs(5)).is_some());
        generation += 1;
        op = start(&c, generation);
    }
    assert!(op.wait_ready(Duration::from_secs(60)), "{}", op.log());

    let names: BTreeSet<String> = (0..DESKS).map(|i| format!("d{i:02}")).collect();
    eventually(Duration::from_secs(120), "every desk Running", || async {
        (apis.count_in_phase("Running").await == DESKS).then_some(())
    })
    .await;
    let vms = apis
        .vms
        .list(&ListParams::default())
        .await
        .expect("list vms");
    let vm_names: Vec<String> = vms
        .items
        .iter()
        .filter_map(|v| v.metadata.name.clone())
        .collect();
    assert_eq!(vm_names.len(), DESKS, "VMs: {vm_names:?}");
    let expected: BTreeSet<String> = names.iter().map(|n| format!("cyberdesk-{n}")).collect();
    assert_eq!(vm_names.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let created = op.metric("cyberdesk_vm_created_total").unwrap_or(0.0);
    eprintln!("VMs created by the last operator generation: {created}");

    apis.desks
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete all");
    eventually(
        Duration::from_secs(120),
        "every desk and VM gone",
        || async {
            let desks = apis
                .desks
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let vms = apis
                .vms
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let vmis = apis
                .vmis
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            (desks == 0 && vms == 0 && vmis == 0).then_some(())
        },
    )
    .await;
}
