//! Claims across a leader killed mid-claim: fifty desks arrive at once against a pool of
//! twenty ready VMs, and the Lease holder is SIGKILLed as soon as the first claim lands,
//! while other claims and cold creations are in flight. The standby replica takes the
//! Lease over once it expires and finishes the work: still no VM with two desks, no desk
//! with two VMs, no VM left without an owner, and every desk runs. Two replicas with
//! leader election, as the ServiceAccount, no webhooks.

use std::time::Duration;

use cyberdesk_integration::cluster::{apply, cluster, install_everything, namespace};
use cyberdesk_integration::desks::{Apis, in_phase};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::lease;
use cyberdesk_integration::operator::{
    OperatorProcess, Scrape, metric_sample, reconciler_only_flags,
};
use cyberdesk_integration::pools::{
    audit, create_pool_desks, pool_vms, pool_yaml, wait_pool_ready,
};
use cyberdesk_integration::wait::{eventually, until};
use cyberdesk_operator::model::CyberdeskPool;
use kube::Api;

/// Lease timing of both replicas: short, so the takeover after SIGKILL (no release) comes
/// soon after the Lease expires.
const LEASE_SECS: u64 = 8;
const RENEW_SECS: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_claim_leaves_no_double_claim_and_no_leak() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "pool-kill").await;
    let _sim = Simulator::start(
        client.clone(),
        SimulatorOptions::default()
            .with_phase_delay(Duration::from_secs(2))
            .within(&ns),
    );
    let apis = Apis::new(&client, &ns);
    let pools: Api<CyberdeskPool> = Api::namespaced(client.clone(), &ns);
    let mut flags = reconciler_only_flags(true);
    flags.extend([
        format!("--lease-duration-secs={LEASE_SECS}"),
        format!("--lease-renew-secs={RENEW_SECS}"),
    ]);

    let first = OperatorProcess::start(&c, "first", &flags);
    assert!(
        first.wait_ready(Duration::from_secs(60)).await,
        "{}",
        first.log()
    );
    let led = lease::wait_holder(&client, "first", Duration::from_secs(30)).await;
    // The standby: ready, serving, and not reconciling while the first holds the Lease.
    let second = OperatorProcess::start(&c, "second", &flags);
    assert!(
        second.wait_ready(Duration::from_secs(60)).await,
        "{}",
        second.log()
    );
    apply(&c, &pool_yaml(&ns, "warm", "{size: 20, maxBooting: 20}"));
    wait_pool_ready(&pools, "warm", 20, Duration::from_secs(90)).await;

    let created = tokio::spawn({
        let apis = Apis::new(&client, &ns);
        async move { create_pool_desks(&apis, 50, "warm").await }
    });
    // Kill the leader the moment the first claim is visible: the rest are mid-flight.
    eventually(Duration::from_secs(30), "a first claim", || async {
        let vms = pool_vms(&apis, "warm").await;
        vms.iter().any(|vm| vm.is_claimed_from_pool()).then_some(())
    })
    .await;
    first.signal(libc::SIGKILL);
    let claimed_before = pool_vms(&apis, "warm")
        .await
        .iter()
        .filter(|vm| vm.is_claimed_from_pool())
        .count();
    drop(first);
    // The standby never reconciled while the first led (a failed scrape panics).
    let standby = second.scrape();
    let standby_passes = ["success", "requeue", "error"]
        .iter()
        .filter_map(|r| {
            metric_sample(
                &standby,
                &format!("cyberdesk_reconcile_total{{result=\"{r}\"}}"),
            )
        })
        .sum::<f64>();
    assert_eq!(
        standby_passes, 0.0,
        "the standby reconciled while not leading"
    );
    created.await.expect("creates").expect("create desks");

    // The Lease changes hands: the standby holds it. kube-lease-manager does not always
    // count the takeover of an expired Lease in leaseTransitions: only that it never goes back.
    let took = lease::wait_holder(&client, "second", Duration::from_secs(60)).await;
    assert!(
        took.transitions >= led.transitions,
        "first held {led:?}, then {took:?}"
    );
    let all_running = until(Duration::from_secs(120), || async {
        (apis.count_in_phase("Running").await == 50).then_some(())
    })
    .await;
    if all_running.is_none() {
        let desks = apis.desks.list(&Default::default()).await.expect("desks");
        let stuck: Vec<String> = desks
            .items
            .iter()
            .filter(|d| !in_phase(d, "Running"))
            .map(|d| format!("{:?}: {:?}", d.metadata.name, d.status))
            .collect();
        let log = second.log();
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "not every desk runs; stuck: {stuck:#?}\nsecond operator's log (last lines, newest first):\n{}",
            tail.join("\n")
        );
    }
    let (pooled, cold) = audit(&apis).await;
    assert_eq!(pooled + cold, 50);
    assert!(
        pooled >= claimed_before,
        "{claimed_before} claims before the kill, {pooled} desks from the pool after"
    );
    // Nothing was claimed that no desk uses: the audit checked every claimed VM is a
    // desk's VM. And nothing is left over: every VM is a desk's or the pool's.
    let claimed = pool_vms(&apis, "warm")
        .await
        .iter()
        .filter(|vm| vm.is_claimed_from_pool())
        .count();
    assert_eq!(claimed, pooled);
    wait_pool_ready(&pools, "warm", 20, Duration::from_secs(90)).await;
    eprintln!(
        "claims before the kill: {claimed_before}; after: {pooled} from the pool, {cold} cold"
    );
}
