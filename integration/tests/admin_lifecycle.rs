//! The operator as a process: /healthz, /metrics and /readyz through start-up (false until
//! its caches sync) and shutdown (false again on SIGTERM), then exit code 0.
//! Own test binary: it needs a control plane on which the CRD is not yet installed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cyberdesk_integration::controlplane::http_get;
use cyberdesk_integration::harness::{free_addr, poll_until};
use cyberdesk_integration::operator::{operator_binary, operator_output};
use cyberdesk_integration::shared::cluster;
use cyberdesk_operator::metrics::FAMILIES;

#[test]
fn readyz_tracks_startup_and_shutdown_and_exit_is_clean() {
    let c = cluster();
    // The self-managed certificate lives in the operator namespace.
    let ns = c
        .kubectl()
        .run(&["create", "namespace", "cyberdesk-system"], None)
        .expect("kubectl");
    assert!(ns.success, "{}", ns.stderr);
    let admin = free_addr();
    let log = c.dir.join("operator-admin-lifecycle.log");
    let log_file = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new(operator_binary())
        .args([
            "run",
            "--leader-election=false",
            "--shutdown-delay-secs=3",
            "--manage-webhook-config=false",
            "--policy-dir=/nonexistent",
        ])
        .arg(format!("--admin-addr={admin}"))
        .arg(format!("--webhook-addr={}", free_addr()))
        .env("KUBECONFIG", &c.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn operator");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();

    assert!(
        poll_until(Duration::from_secs(20), || matches!(
            http_get(admin, "/healthz"),
            Ok((200, _))
        )),
        "admin server never came up: {}",
        log_text()
    );
    // No CRD yet: the Cyberdesk cache cannot sync, so the replica must not be ready.
    let (code, body) = http_get(admin, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("caches"), "{body}");

    let (code, metrics) = http_get(admin, "/metrics").expect("metrics");
    assert_eq!(code, 200);
    for family in FAMILIES {
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
        poll_until(Duration::from_secs(60), || matches!(
            http_get(admin, "/readyz"),
            Ok((200, _))
        )),
        "never became ready after the CRD appeared: {}",
        log_text()
    );

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert!(
        poll_until(Duration::from_secs(2), || matches!(
            http_get(admin, "/readyz"),
            Ok((503, body)) if body.contains("shutting down")
        )),
        "readyz did not turn false on SIGTERM"
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "operator did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}: {}", log_text());
}
