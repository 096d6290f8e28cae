//! The operator as a process under signals and a stolen Lease: a second SIGTERM during the
//! shutdown delay exits at once with 130, and a leader whose Lease another holder takes
//! over ends its process (non-zero) instead of reconciling as a half-leader.

use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::cluster;
use cyberdesk_integration::operator::{ready_operator, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{Patch, PatchParams};

/// The two tests share one control plane and the one Lease name; one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once_with_130() {
    let _one_at_a_time = SERIAL.lock().await;
    let c = cluster();
    let mut flags = reconciler_only_flags(false);
    // Long enough that only the second signal can explain a quick exit.
    flags.push("--shutdown-delay-secs=20".into());
    let mut op = ready_operator(&c, "twice", &flags).await;
    op.signal(libc::SIGTERM);
    // The first signal starts the drain: not ready, still running.
    if let Some(status) = op.wait_exit(Duration::from_secs(2)).await {
        panic!(
            "exited ({status}) on the first signal during a 20 s shutdown delay: {}",
            op.log()
        );
    }
    let second = Instant::now();
    op.signal(libc::SIGTERM);
    let status = op
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("still running 5 s after the second signal");
    eprintln!("exited {:?} after the second signal", second.elapsed());
    assert_eq!(status.code(), Some(130), "{status}: {}", op.log());
    assert!(op.log().contains("second signal"), "{}", op.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_exits() {
    let _one_at_a_time = SERIAL.lock().await;
    let c = cluster();
    let mut op = ready_operator(&c, "deposed", &reconciler_only_flags(true)).await;
    let leases: Api<Lease> = Api::namespaced(c.client().await, "cyberdesk-system");
    eventually(
        Duration::from_secs(30),
        "the operator holding the Lease",
        || async {
            let lease = leases.get_opt("cyberdesk-operator").await.ok()??;
            (lease.spec?.holder_identity.as_deref() == Some("deposed")).then_some(())
        },
    )
    .await;

    // An admin (or a split-brain peer) writes another holder into the Lease.
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let stolen = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "acquireTime": now,
        "renewTime": now,
        "leaseDurationSeconds": 3600,
    }});
    leases
        .patch(
            "cyberdesk-operator",
            &PatchParams::default(),
            &Patch::Merge(&stolen),
        )
        .await
        .expect("patch the Lease");
    let stolen_at = Instant::now();
    // Renewals run every 2 s (the default); allow a lease duration (15 s) and slack.
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("still running after losing the Lease: {}", op.log()));
    eprintln!("exited {:?} after the Lease was taken", stolen_at.elapsed());
    assert!(!status.success(), "exit status {status}");
    assert!(op.log().contains("lost the leader Lease"), "{}", op.log());
    let holder = leases
        .get("cyberdesk-operator")
        .await
        .expect("Lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(
        holder.as_deref(),
        Some("intruder"),
        "the deposed leader took it back"
    );
}
