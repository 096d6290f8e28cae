//! Two replicas: only the Lease holder reconciles; SIGKILL of the leader hands over within
//! the lease duration, SIGTERM within a couple of seconds (the Lease is released).

use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::{Cluster, apply, cluster, install_everything, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, Scrape, metric_sample};
use cyberdesk_integration::wait::holds;

/// The Lease timing both replicas run with.
const LEASE_SECS: u64 = 15;
const RENEW_SECS: u64 = 2;
/// Room for a loaded machine on top of what the Lease timing allows.
const SLACK_SECS: u64 = 3;

async fn replica(c: &Cluster, identity: &str) -> OperatorProcess {
    let args = vec![
        // Two replicas registering two URLs would flap; these tests need no webhooks.
        "--manage-webhook-config=false".to_string(),
        "--extra-san=127.0.0.1".to_string(),
        "--policy-dir=/nonexistent".to_string(),
        format!("--lease-duration-secs={LEASE_SECS}"),
        format!("--lease-renew-secs={RENEW_SECS}"),
    ];
    let op = OperatorProcess::start(c, identity, &args);
    assert!(
        op.wait_ready(Duration::from_secs(60)).await,
        "{identity} not ready: {}",
        op.log()
    );
    op
}

/// Whether `op` says it holds the Lease; a failed scrape panics rather than read as "no".
fn is_leader(op: &OperatorProcess) -> bool {
    let sample = format!("cyberdesk_leader{{identity=\"{}\"}}", op.identity);
    metric_sample(&op.scrape(), &sample) == Some(1.0)
}

/// Reconcile passes `op` has run. A result label appears with its first pass, so an absent
/// sample is zero, but only from a scrape that answered: a failed one panics.
fn reconciles(op: &OperatorProcess) -> f64 {
    let text = op.scrape();
    ["success", "requeue", "error"]
        .iter()
        .filter_map(|r| {
            metric_sample(
                &text,
                &format!("cyberdesk_reconcile_total{{result=\"{r}\"}}"),
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles_and_failover_is_quick() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "ha").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);

    let mut a = replica(&c, "replica-a").await;
    assert!(
        holds(Duration::from_secs(30), || is_leader(&a)).await,
        "a never led: {}",
        a.log()
    );
    let mut b = replica(&c, "replica-b").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!is_leader(&b), "two leaders at once");

    apply(&c, &desk_yaml(&ns, "one", "{timeoutMs: 600000}"));
    apis.wait_phase("one", "Running", Duration::from_secs(30))
        .await;
    assert!(reconciles(&a) > 0.0);
    assert_eq!(reconciles(&b), 0.0, "the follower reconciled");
    assert_eq!(b.metric("cyberdesk_vm_created_total"), Some(0.0));

    // SIGKILL: no release; the follower must wait for the Lease to expire.
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    assert!(a.wait_exit(Duration::from_secs(5)).await.is_some());
    assert!(
        holds(Duration::from_secs(25), || is_leader(&b)).await,
        "b never took over: {}",
        b.log()
    );
    let sigkill_takeover = killed.elapsed();
    eprintln!(
        "takeover after SIGKILL: {:.1}s",
        sigkill_takeover.as_secs_f64()
    );
    // Unreleased: the Lease must expire, and the follower notices at its next try.
    assert!(
        sigkill_takeover <= Duration::from_secs(LEASE_SECS + RENEW_SECS + SLACK_SECS),
        "took {sigkill_takeover:?}"
    );

    apply(&c, &desk_yaml(&ns, "two", "{timeoutMs: 600000}"));
    apis.wait_phase("two", "Running", Duration::from_secs(30))
        .await;

    // SIGTERM: the leader drains and releases the Lease, so a peer takes over at once.
    let a2 = replica(&c, "replica-a2").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!is_leader(&a2));
    b.signal(libc::SIGTERM);
    let termed = Instant::now();
    assert!(
        holds(Duration::from_secs(15), || is_leader(&a2)).await,
        "a2 never took over: {}",
        a2.log()
    );
    let sigterm_takeover = termed.elapsed();
    eprintln!(
        "takeover after SIGTERM: {:.1}s",
        sigterm_takeover.as_secs_f64()
    );
    // Released: the follower takes it at its next try, after the leader's drain.
    assert!(
        sigterm_takeover <= Duration::from_secs(2 * RENEW_SECS + SLACK_SECS),
        "took {sigterm_takeover:?}"
    );
    let status = b
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("b exits after SIGTERM");
    assert!(status.success(), "b exited with {status}: {}", b.log());
}
