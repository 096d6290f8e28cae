//! Steady state: with 100 Running desks, some TimedOut ones and one that cannot start
//! (its template is broken, so it is retried), and nothing changing for 60 s, the operator
//! makes zero write requests. Counted on the apiserver (apiserver_request_total), so
//! nothing the operator forgets to count can hide; and the operator is shown to be alive
//! and reacting after the quiet minute, so silence cannot come from a dead process.

use std::collections::BTreeMap;
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, apply, cluster, install_everything, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;

const DESKS: usize = 100;
const WRITE_VERBS: &[&str] = &["POST", "PUT", "PATCH", "DELETE", "APPLY"];

/// Write requests per resource since the apiserver started. Panics when the scrape fails,
/// so a failed scrape can never read as "no writes".
fn writes(c: &Cluster) -> BTreeMap<String, f64> {
    let out = c
        .kubectl()
        .run(&["get", "--raw", "/metrics"], None)
        .expect("kubectl");
    assert!(out.success, "apiserver /metrics: {}", out.stderr);
    let text = out.stdout;
    assert!(
        text.contains("apiserver_request_total{"),
        "no apiserver_request_total in the scrape"
    );
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        // kube-apiserver renews its own identity Lease every 10 s; the operator runs without
        // leader election here, so no Lease write can be its.
        if !WRITE_VERBS.contains(&label("verb").as_str()) || label("resource") == "leases" {
            continue;
        }
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *counts.entry(label("resource")).or_insert(0.0) += value;
    }
    counts
}

const TIMED_OUT: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_world_gets_no_writes() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "steady").await;
    let sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let args = reconciler_only_flags(false);
    let op = OperatorProcess::start(&c, "steady", &args);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());

    let all: Vec<String> = (0..DESKS)
        .map(|i| desk_yaml(&ns, &format!("s{i:03}"), "{timeoutMs: 3600000}"))
        .collect();
    let out = c.kubectl().apply(&all.join("---\n"), &[]).expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    // Desks that time out and stay (Stop), and one whose template does not render: it is
    // retried every few seconds, and a retry that changes nothing must write nothing.
    let timed_out: Vec<String> = (0..TIMED_OUT)
        .map(|i| {
            desk_yaml(
                &ns,
                &format!("t{i}"),
                "{timeoutMs: 5000, timeoutAction: Stop}",
            )
        })
        .collect();
    let template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: broken-{ns}, namespace: cyberdesk-system, labels: {{cyberdesk.io/template: \"true\"}}}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec: {{template: {{spec: {{hostname: '${{owner}}'}}}}}}\n"
    );
    let failed = desk_yaml(
        &ns,
        "broken",
        &format!("{{timeoutMs: 3600000, template: broken-{ns}}}"),
    );
    let out = c
        .kubectl()
        .apply(
            &[timed_out.join("---\n"), template, failed].join("---\n"),
            &[],
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    eventually(Duration::from_secs(180), "the quiet world", || async {
        let running = apis.count_in_phase("Running").await;
        let timed_out = apis.count_in_phase("TimedOut").await;
        let failed = apis.phase("broken").await;
        (running == DESKS && timed_out == TIMED_OUT && failed.as_deref() == Some("Failed"))
            .then_some(())
    })
    .await;
    // Let trailing events and the watch echoes of the last status writes settle.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let before = writes(&c);
    assert!(
        before.get("cyberdesks").copied().unwrap_or(0.0) > 0.0,
        "the baseline shows no Cyberdesk writes, so the count cannot be trusted: {before:?}"
    );
    let sim_before = sim
        .counters()
        .vm_status_writes
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let after = writes(&c);
    let sim_after = sim
        .counters()
        .vm_status_writes
        .load(std::sync::atomic::Ordering::Relaxed);
    let delta: BTreeMap<&String, f64> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    eprintln!(
        "write requests during the quiet minute: {delta:?} (simulator VM status writes: {})",
        sim_after - sim_before
    );
    assert!(delta.is_empty(), "writes in steady state: {delta:?}");

    // Alive and reacting: a new desk runs, a deleted one goes.
    assert!(op.wait_ready(Duration::from_secs(1)).await, "{}", op.log());
    apply(&c, &desk_yaml(&ns, "after", "{timeoutMs: 3600000}"));
    apis.wait_phase("after", "Running", Duration::from_secs(30))
        .await;
    let out = c
        .kubectl()
        .run(&["delete", "cd", "s000", "-n", &ns, "--wait=false"], None)
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    eventually(Duration::from_secs(30), "a deleted desk gone", || async {
        apis.desks
            .get_opt("s000")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
