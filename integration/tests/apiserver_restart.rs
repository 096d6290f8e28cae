//! The apiserver goes away mid-run and comes back: the operator neither crashes nor loses
//! track — a desk that expired during the outage is timed out afterwards, a desk created
//! as the apiserver came back is served and deletions still clean up. A leader rides out
//! an outage shorter than its Lease: same process, still leading, still reconciling.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, apply, install_everything, namespace};
use cyberdesk_integration::controlplane::{ControlPlane, Options};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, Scrape, reconciler_only_flags};
use cyberdesk_integration::wait::{eventually, holds, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_recovers_from_an_apiserver_restart() {
    // Our own control plane: this test restarts its apiserver.
    let mut cp = ControlPlane::start(&Options::default()).expect("control plane");
    let c = Cluster::of(&cp);
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "restart-api").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let args = reconciler_only_flags(false);
    let mut op = OperatorProcess::start(&c, "api-restart", &args);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());

    apply(&c, &desk_yaml(&ns, "before", "{timeoutMs: 600000}"));
    apply(
        &c,
        &desk_yaml(&ns, "expires", "{timeoutMs: 600000, timeoutAction: Stop}"),
    );
    apis.wait_phase("before", "Running", Duration::from_secs(30))
        .await;
    apis.wait_phase("expires", "Running", Duration::from_secs(30))
        .await;

    // Expires 3 s from now, whatever the start took.
    apis.expire_in(&c, "expires", "timeoutAction: Stop", Duration::from_secs(3))
        .await;
    cp.stop_apiserver();
    // Long enough for "expires" to pass its expiry while nobody can write.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        op.wait_exit(Duration::from_millis(10)).await.is_none(),
        "operator died with the apiserver: {}",
        op.log()
    );
    cp.start_apiserver().expect("apiserver restarts");
    // Created while the operator's watches still back off: they resume with a relist, and
    // this desk is in the list, not a watch event after it.
    apply(&c, &desk_yaml(&ns, "after", "{timeoutMs: 600000}"));

    apis.wait_phase("expires", "TimedOut", Duration::from_secs(90))
        .await;
    apis.wait_phase("after", "Running", Duration::from_secs(90))
        .await;
    assert_eq!(apis.phase("before").await.as_deref(), Some("Running"));

    let out = c
        .kubectl()
        .run(&["delete", "cd", "before", "-n", &ns], None)
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    eventually(
        Duration::from_secs(30),
        "the VM of a deleted desk to go",
        || async {
            apis.vms
                .get_opt("cyberdesk-before")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    drop(op);
    drop(cp);
}

fn is_leader(op: &OperatorProcess) -> bool {
    op.metric(&format!("cyberdesk_leader{{identity=\"{}\"}}", op.identity)) == Some(1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_rides_out_an_apiserver_outage_shorter_than_its_lease() {
    let mut cp = ControlPlane::start(&Options::default()).expect("control plane");
    let c = Cluster::of(&cp);
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "lease-outage").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let mut args = reconciler_only_flags(true);
    // A 30 s Lease: the leader steps down 28 s after its last renewal, which leaves a
    // loaded machine (where an apiserver restart alone has taken 8-12 s) room to bring the
    // apiserver back after the 5 s outage.
    args.push("--lease-duration-secs=30".to_string());
    args.push("--lease-renew-secs=2".to_string());
    let mut op = OperatorProcess::start(&c, "lease-outage", &args);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    assert!(
        holds(Duration::from_secs(30), || is_leader(&op)).await,
        "never led: {}",
        op.log()
    );
    // Lead for longer than a lease duration first: the outage must be judged from the last
    // renewal, not from when the Lease was taken.
    tokio::time::sleep(Duration::from_secs(32)).await;

    cp.stop_apiserver();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        op.try_exit().is_none(),
        "the leader exited during a 5 s outage of a 30 s Lease: {}",
        op.log()
    );
    cp.start_apiserver().expect("apiserver restarts");

    // Still the same process, still leading, still reconciling.
    apply(&c, &desk_yaml(&ns, "after-outage", "{timeoutMs: 600000}"));
    let running = until(Duration::from_secs(60), || async {
        (apis.phase("after-outage").await.as_deref() == Some("Running")).then_some(())
    })
    .await
    .is_some();
    assert!(
        op.try_exit().is_none(),
        "the leader exited after the outage: {}",
        op.log()
    );
    assert!(running, "no desk served after the outage: {}", op.log());
    assert!(is_leader(&op), "no longer leads: {}", op.log());
    drop(op);
    drop(cp);
}
