//! What a desk shows for each state KubeVirt can put its VM and VMI in, with the simulator
//! as unkind as KubeVirt: readiness and the address later than `Running`, an address that
//! changes, a start stuck on scheduling or on the image, a guest that shuts itself down, a
//! crash with restart backoff, a node that stops answering, an admin who runs the VM by hand
//! (`runStrategy: Manual`, `virtctl stop`/`start`), a VM on several networks.

use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::Cluster;
use cyberdesk_integration::desks::{
    Apis, desk_namespace, desk_yaml, events_about, jsonpath, wait_event,
};
use cyberdesk_integration::kubevirt::{SimulatorHandle, SimulatorOptions, StartFault, Virtctl};
use cyberdesk_integration::operator::webhook_operator;
use cyberdesk_integration::wait::{EVERY, eventually};
use cyberdesk_operator::model::conditions::{self, ConditionStatus};

async fn desk_ns(prefix: &str, opts: SimulatorOptions) -> (Cluster, String, Apis, SimulatorHandle) {
    let (c, _op) = webhook_operator(&[]).await;
    let (ns, apis, sim) = desk_namespace(&c, prefix, opts).await;
    (c, ns, apis, sim)
}

fn apply(c: &Cluster, yaml: &str) {
    let out = c.kubectl().apply(yaml, &[]).expect("kubectl");
    assert!(out.success, "kubectl apply failed: {}", out.stderr);
}

/// The address the VMI reports, read as raw JSON with kubectl.
fn reported_ip(c: &Cluster, ns: &str, vmi: &str) -> String {
    jsonpath(
        c,
        ns,
        &format!("vmi/{vmi}"),
        "{.status.interfaces[0].ipAddress}",
    )
}

/// Waits until the desk shows `phase` with `message`.
async fn wait_phase_message(apis: &Apis, name: &str, phase: &str, message: &str) {
    let what = format!("{name}: phase {phase} with message {message:?}");
    eventually(Duration::from_secs(30), &what, || async {
        let status = apis.desks.get(name).await.ok()?.status?;
        (status.phase.map(|p| p.as_str()) == Some(phase)
            && status.message.as_deref() == Some(message))
        .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_address_after_running_keep_the_desk_starting() {
    let opts = SimulatorOptions {
        ip_after_running: Duration::from_millis(1500),
        ready_after_running: Duration::from_secs(3),
        ..Default::default()
    };
    let (c, ns, apis, _sim) = desk_ns("late-ready", opts).await;
    apply(&c, &desk_yaml(&ns, "slow", "{timeoutMs: 600000}"));
    // The VMI runs, but its readiness probe has not passed: Starting, with no Ready event.
    wait_phase_message(
        &apis,
        "slow",
        "Starting",
        "the VirtualMachineInstance runs; waiting for it to be ready",
    )
    .await;
    // The operator writes a phase before it announces it, so events read before a phase
    // that still says Starting must hold no Ready event.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut looks_while_starting = 0;
    while Instant::now() < deadline {
        let events = events_about(&c, &ns, "slow");
        if apis.phase("slow").await.as_deref() != Some("Starting") {
            break;
        }
        looks_while_starting += 1;
        assert!(
            !events.iter().any(|e| e.reason == "Ready"),
            "a Ready event while the desk is Starting: {events:?}"
        );
        tokio::time::sleep(EVERY).await;
    }
    assert!(looks_while_starting > 0, "the desk left Starting at once");
    let desk = apis
        .wait_phase("slow", "Running", Duration::from_secs(30))
        .await;
    let status = desk.status.expect("status");
    let reported = reported_ip(&c, &ns, "cyberdesk-slow");
    assert!(!reported.is_empty(), "the simulator reported no address");
    assert_eq!(status.ip_address.as_deref(), Some(reported.as_str()));
    let ready = conditions::find(&status.conditions, conditions::READY).expect("Ready");
    assert_eq!(ready.status, ConditionStatus::True);
    // The event the check above looked for does come, once Running.
    let event = wait_event(&c, &ns, "slow", "Ready", Duration::from_secs(10)).await;
    assert_eq!(event.type_, "Normal", "{event:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_reaches_the_status() {
    let (c, ns, apis, sim) = desk_ns("new-ip", SimulatorOptions::default()).await;
    apply(&c, &desk_yaml(&ns, "moving", "{timeoutMs: 600000}"));
    let first = apis
        .wait_phase("moving", "Running", Duration::from_secs(30))
        .await
        .status
        .and_then(|s| s.ip_address)
        .expect("an address");
    let second = sim
        .change_ip(&ns, "cyberdesk-moving")
        .await
        .expect("change ip");
    assert_ne!(first, second);
    eventually(
        Duration::from_secs(10),
        "the new address in the status",
        || async {
            let ip = apis.desks.get("moving").await.ok()?.status?.ip_address?;
            (ip == second).then_some(())
        },
    )
    .await;
    assert_eq!(reported_ip(&c, &ns, "cyberdesk-moving"), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_start_fails_the_desk_until_kubevirt_recovers() {
    let (c, ns, apis, sim) = desk_ns("stuck", SimulatorOptions::default()).await;
    for (desk, fault, state) in [
        ("nonode", StartFault::Unschedulable, "ErrorUnschedulable"),
        ("noimage", StartFault::ErrImagePull, "ErrImagePull"),
    ] {
        let vm = format!("cyberdesk-{desk}");
        sim.hold_start(&ns, &vm, fault);
        apply(&c, &desk_yaml(&ns, desk, "{timeoutMs: 600000}"));
        wait_phase_message(
            &apis,
            desk,
            "Failed",
            &format!("the VirtualMachine is in state {state}"),
        )
        .await;
        let ready = apis
            .wait_condition(desk, conditions::READY, "Failed", Duration::from_secs(10))
            .await;
        assert_eq!(ready.status, ConditionStatus::False);
        // Failed is not final: once KubeVirt can start it, the desk runs.
        sim.release_start(&ns, &vm);
        apis.wait_phase(desk, "Running", Duration::from_secs(30))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_crash_and_a_lost_node_show_and_the_desk_comes_back() {
    let opts = SimulatorOptions {
        restart_backoff: Duration::from_secs(3),
        ..Default::default()
    };
    let (c, ns, apis, sim) = desk_ns("ended", opts).await;
    apply(&c, &desk_yaml(&ns, "bumpy", "{timeoutMs: 600000}"));
    let started = apis
        .wait_phase("bumpy", "Running", Duration::from_secs(30))
        .await
        .status
        .and_then(|s| s.start_time);
    let vmi = "cyberdesk-bumpy";

    // The guest shuts itself down: Stopping until runStrategy Always starts it again.
    sim.set_vmi_phase(&ns, vmi, "Succeeded")
        .await
        .expect("phase");
    wait_phase_message(
        &apis,
        "bumpy",
        "Stopping",
        "the VirtualMachineInstance stopped",
    )
    .await;
    apis.wait_phase("bumpy", "Running", Duration::from_secs(30))
        .await;

    // The guest crashes: KubeVirt backs off (CrashLoopBackOff), the desk is Failed, and
    // runs again after the backoff.
    sim.set_vmi_phase(&ns, vmi, "Failed").await.expect("phase");
    wait_phase_message(
        &apis,
        "bumpy",
        "Failed",
        "the VirtualMachine is in state CrashLoopBackOff",
    )
    .await;
    apis.wait_phase("bumpy", "Running", Duration::from_secs(30))
        .await;

    // The node stops answering (Unknown), then answers again.
    sim.set_vmi_phase(&ns, vmi, "Unknown").await.expect("phase");
    wait_phase_message(
        &apis,
        "bumpy",
        "Starting",
        "the VirtualMachineInstance is Unknown",
    )
    .await;
    sim.set_vmi_phase(&ns, vmi, "Running").await.expect("phase");
    let desk = apis
        .wait_phase("bumpy", "Running", Duration::from_secs(30))
        .await;
    // A restarted VMI is the same desk: its clock did not restart.
    assert_eq!(desk.status.and_then(|s| s.start_time), started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_run_by_hand_shows_its_stops_and_starts_and_still_times_out() {
    let (c, ns, apis, sim) = desk_ns("manual", SimulatorOptions::default()).await;
    apply(
        &c,
        &desk_yaml(&ns, "byhand", "{timeoutMs: 600000, timeoutAction: Stop}"),
    );
    let started = apis
        .wait_phase("byhand", "Running", Duration::from_secs(30))
        .await
        .status
        .and_then(|s| s.start_time);
    let vm = "cyberdesk-byhand";
    // An admin takes the VM over: Manual runs only on virtctl start/stop.
    let out = c
        .kubectl()
        .run(
            &[
                "patch",
                "vm",
                vm,
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"spec":{"runStrategy":"Manual"}}"#,
            ],
            None,
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);

    sim.virtctl(&ns, vm, Virtctl::Stop)
        .await
        .expect("virtctl stop");
    wait_phase_message(
        &apis,
        "byhand",
        "Provisioning",
        "the VirtualMachine exists; waiting for its instance",
    )
    .await;
    let ready = apis
        .wait_condition(
            "byhand",
            conditions::READY,
            "Provisioning",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(ready.status, ConditionStatus::False);
    // The operator leaves a stopped Manual VM alone: it is not restarted behind the admin.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(apis.vmis.get_opt(vm).await.expect("get VMI").is_none());

    sim.virtctl(&ns, vm, Virtctl::Start)
        .await
        .expect("virtctl start");
    let desk = apis
        .wait_phase("byhand", "Running", Duration::from_secs(30))
        .await;
    assert_eq!(
        desk.status.and_then(|s| s.start_time),
        started,
        "the clock restarted"
    );

    // The timeout still halts it, whatever the admin set.
    // (Stop again: kubectl apply drops a field the new manifest leaves out, and the
    // default, Delete, would delete the desk and its VM.)
    apis.expire_in(&c, "byhand", "timeoutAction: Stop", Duration::from_secs(2))
        .await;
    apis.wait_phase("byhand", "TimedOut", Duration::from_secs(30))
        .await;
    assert_eq!(
        jsonpath(&c, &ns, &format!("vm/{vm}"), "{.spec.runStrategy}"),
        "Halted"
    );
    eventually(Duration::from_secs(20), "the VMI stopped", || async {
        apis.vmis.get_opt(vm).await.ok()?.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_several_networks_the_desk_shows_the_first_networks_address() {
    let opts = SimulatorOptions {
        guest_only_interface: true,
        ..Default::default()
    };
    let (c, ns, apis, _sim) = desk_ns("multinet", opts).await;
    // The pod network first, then a secondary (Multus) network.
    let template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: multinet-{ns}, namespace: cyberdesk-system, labels: {{cyberdesk.io/template: \"true\"}}}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec:\n      template:\n        spec:\n          domain: {{devices: {{interfaces: [{{name: default, masquerade: {{}}}}, {{name: storage, bridge: {{}}}}]}}}}\n          networks: [{{name: default, pod: {{}}}}, {{name: storage, multus: {{networkName: storage-net}}}}]\n"
    );
    apply(&c, &template);
    let desk = desk_yaml(
        &ns,
        "wide",
        &format!("{{timeoutMs: 600000, template: multinet-{ns}}}"),
    );
    // The webhook learns of a new template through its watch; until then it says not found.
    eventually(Duration::from_secs(15), "the desk admitted", || async {
        c.kubectl().apply(&desk, &[]).ok()?.success.then_some(())
    })
    .await;
    let status = apis
        .wait_phase("wide", "Running", Duration::from_secs(30))
        .await
        .status
        .expect("status");
    let vmi = "vmi/cyberdesk-wide";
    let listed = jsonpath(&c, &ns, vmi, "{.status.interfaces[*].ipAddress}");
    assert_eq!(listed.split_whitespace().count(), 3, "interfaces: {listed}");
    let pod_network = jsonpath(
        &c,
        &ns,
        vmi,
        "{.status.interfaces[?(@.name==\"default\")].ipAddress}",
    );
    assert!(!pod_network.is_empty(), "interfaces: {listed}");
    assert_eq!(status.ip_address.as_deref(), Some(pod_network.as_str()));
}
