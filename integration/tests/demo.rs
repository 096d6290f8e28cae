//! `make demo` works end to end: the sample desk goes Provisioning → Running → TimedOut.

use std::process::Command;

#[test]
fn the_demo_runs_the_sample_desk_to_its_timeout() {
    let _ = cyberdesk_integration::workspace::operator_binary();
    let out = Command::new(env!("CARGO_BIN_EXE_cyberdesk-demo"))
        .args(["--until-timed-out", "--phase-delay-ms=200"])
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    assert!(stderr.contains("the demo desk timed out"), "{stderr}");
    for phase in ["Running", "TimedOut"] {
        assert!(
            stdout.contains(phase),
            "`kubectl get cyberdesks -w` never showed {phase}:\n{stdout}"
        );
    }
}

/// `make demo-pool`: the pool fills first, then the sample desk claims one of its VMs.
#[test]
fn the_pool_demo_runs_a_desk_from_the_pool_to_its_timeout() {
    let _ = cyberdesk_integration::workspace::operator_binary();
    let out = Command::new(env!("CARGO_BIN_EXE_cyberdesk-demo"))
        .args(["--pool", "--until-timed-out", "--phase-delay-ms=200"])
        .output()
        .expect("run the demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stderr}");
    assert!(
        stderr.contains("cyberdeskpool.cyberdesk.io/warm created"),
        "{stderr}"
    );
    assert!(stderr.contains("the demo desk timed out"), "{stderr}");
    // The desk's VM was claimed from the pool, not booted for it.
    assert!(
        stderr.contains("the demo desk's VM came from: Pool"),
        "{stderr}"
    );
}
