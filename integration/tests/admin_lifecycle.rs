//! The operator as a process: /healthz, /metrics and /readyz through start-up (false until
//! its caches sync) and shutdown (false again on SIGTERM), then exit code 0.
//! Own test binary: it needs a control plane on which the CRD is not yet installed.

use std::time::Duration;

use cyberdesk_integration::cluster::{cluster, install_operator_rbac};
use cyberdesk_integration::controlplane::http_get;
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::wait::holds;
use cyberdesk_integration::workspace::operator_output;
use cyberdesk_operator::metrics::{FAMILIES, PER_POOL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_tracks_startup_and_shutdown_and_exit_is_clean() {
    let c = cluster();
    // The self-managed certificate lives in the operator namespace; the operator runs as
    // its ServiceAccount.
    install_operator_rbac(&c);
    let args = [
        "--leader-election=false",
        // The admin server answers "shutting down" for this long after SIGTERM: a window
        // wide enough for a loaded machine to look.
        "--shutdown-delay-secs=10",
        "--manage-webhook-config=false",
        "--policy-dir=/nonexistent",
    ]
    .map(String::from);
    let mut op = OperatorProcess::start(&c, "admin-lifecycle", &args);
    let admin = op.admin;
    assert!(
        holds(Duration::from_secs(20), || matches!(
            http_get(admin, "/healthz"),
            Ok((200, _))
        ))
        .await,
        "admin server never came up: {}",
        op.log()
    );
    // No CRD yet: the Cyberdesk cache cannot sync, so the replica must not be ready.
    let (code, body) = http_get(admin, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("caches"), "{body}");

    let (code, metrics) = http_get(admin, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for family in FAMILIES.iter().filter(|f| !PER_POOL.contains(f)) {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "missing {family}"
        );
    }

    let crd = operator_output(&["crd"]);
    let applied = c
        .kubectl()
        .apply(&String::from_utf8_lossy(&crd.stdout), &["--server-side"])
        .expect("kubectl")
        .ok();
    assert!(applied.is_ok(), "{applied:?}");
    assert!(
        holds(Duration::from_secs(60), || matches!(
            http_get(admin, "/readyz"),
            Ok((200, _))
        ))
        .await,
        "never became ready after the CRD appeared: {}",
        op.log()
    );

    op.signal(libc::SIGTERM);
    assert!(
        holds(Duration::from_secs(10), || matches!(
            http_get(admin, "/readyz"),
            Ok((503, body)) if body.contains("shutting down")
        ))
        .await,
        "readyz did not turn false on SIGTERM"
    );
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("operator did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}: {}", op.log());
}
