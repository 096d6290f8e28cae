//! The ready call across a leader killed at the worst moment: the VMI turns Ready while
//! the Lease holder is frozen, and it is SIGKILLed before it could act. The next replica
//! takes the Lease over once it expires and makes the call, exactly once; the one after
//! that, taking the Lease from it in turn and seeing the call recorded, never again.
//! Replicas run with leader election under the platform overlay's RBAC and flags.

use std::time::Duration;

use cyberdesk_integration::cluster::{apply, cluster};
use cyberdesk_integration::desks::{Apis, desk_yaml, jsonpath};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions, StartFault};
use cyberdesk_integration::lease;
use cyberdesk_integration::operator::{OperatorProcess, Scrape, free_addr, metric_sample};
use cyberdesk_integration::overlay;
use cyberdesk_integration::recorder::Recorder;
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::model::DeliveryOutcome;

const DESK_NS: &str = "cyberdesk-system";
const VM_NS: &str = "kubevirt";
/// Lease timing of every replica: short, so each takeover of an unreleased Lease (the
/// holder was SIGKILLed) comes soon.
const LEASE_SECS: u64 = 8;
const RENEW_SECS: u64 = 1;
/// Room for the Lease to expire and the next replica to try again on a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_as_the_vmi_turns_ready_leaves_exactly_one_ready_call() {
    let c = cluster();
    // The overlay's flags, the gateway's address replaced; no webhooks (the reconciler
    // adds its finalizer itself).
    let mut flags = overlay::install_platform(&c).await;
    let gateway = Recorder::start();
    flags.extend([
        format!(
            "--ready-url={}/cyberdesk/{{name}}/ready",
            gateway.base_url()
        ),
        "--manage-webhook-config=false".into(),
        "--policy-dir=/nonexistent".into(),
        "--leader-election=true".into(),
        format!("--lease-duration-secs={LEASE_SECS}"),
        format!("--lease-renew-secs={RENEW_SECS}"),
        "--extra-san=127.0.0.1".into(),
    ]);
    let client = c.client().await;
    let sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(VM_NS));
    let desks = Apis::new(&client, DESK_NS);
    let id = "5f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f";
    let ready_path = format!("/cyberdesk/{id}/ready");
    let webhook = free_addr();

    let first = OperatorProcess::start_on(&c, "first", webhook, &flags);
    assert!(
        first.wait_ready(Duration::from_secs(60)).await,
        "{}",
        first.log()
    );
    let first_led = lease::wait_holder(&client, "first", TAKEOVER).await;
    // Hold the VMI before it runs, so the leader can be frozen in time.
    sim.hold_start(VM_NS, id, StartFault::Unschedulable);
    apply(&c, &desk_yaml(DESK_NS, id, "{timeoutMs: 600000}"));
    eventually(
        Duration::from_secs(30),
        "the VMI held in Scheduling",
        || async {
            let phase = jsonpath(&c, VM_NS, &format!("vmi/{id}"), "{.status.phase}");
            (phase == "Scheduling").then_some(())
        },
    )
    .await;

    first.signal(libc::SIGSTOP);
    sim.release_start(VM_NS, id);
    eventually(Duration::from_secs(30), "the VMI Ready", || async {
        let ready = jsonpath(
            &c,
            VM_NS,
            &format!("vmi/{id}"),
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        (ready == "True").then_some(())
    })
    .await;
    first.signal(libc::SIGKILL);
    let first_log = first.log();
    drop(first);
    let early = gateway.requests_to(&ready_path);
    assert!(
        early.is_empty(),
        "the frozen leader called: {early:?}\n{first_log}"
    );

    // The next leader finds the call never made, makes it, and records it.
    let second = OperatorProcess::start_on(&c, "second", webhook, &flags);
    assert!(
        second.wait_ready(Duration::from_secs(60)).await,
        "{}",
        second.log()
    );
    let second_led = lease::wait_holder(&client, "second", TAKEOVER).await;
    // The holder changed hands (wait_holder); kube-lease-manager does not always count
    // the takeover of an expired Lease in leaseTransitions, so only that it never goes back.
    assert!(
        second_led.transitions >= first_led.transitions,
        "first held {first_led:?}, then {second_led:?}"
    );
    let record = eventually(
        Duration::from_secs(30),
        "the ready call recorded",
        || async {
            let desk = desks.desks.get_opt(id).await.ok()??;
            desk.status?.notifications?.ready
        },
    )
    .await;
    assert_eq!(record.outcome, DeliveryOutcome::Delivered);
    assert_eq!(gateway.requests_to(&ready_path).len(), 1);

    // Killed after the record: the one after it reads the record and stays quiet.
    second.signal(libc::SIGKILL);
    drop(second);
    let third = OperatorProcess::start_on(&c, "third", webhook, &flags);
    assert!(
        third.wait_ready(Duration::from_secs(60)).await,
        "{}",
        third.log()
    );
    let third_led = lease::wait_holder(&client, "third", TAKEOVER).await;
    // The holder changed hands (wait_holder); kube-lease-manager does not always count
    // the takeover of an expired Lease in leaseTransitions, so only that it never goes back.
    assert!(
        third_led.transitions >= second_led.transitions,
        "second held {second_led:?}, then {third_led:?}"
    );
    // It has looked at the desk (a pass ended), and a moment more for a call to go out.
    eventually(
        Duration::from_secs(30),
        "a pass by the third operator",
        || async {
            let passes = metric_sample(
                &third.metrics(),
                r#"cyberdesk_reconcile_total{result="success"}"#,
            )?;
            (passes >= 1.0).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = gateway.requests_to(&ready_path);
    assert_eq!(calls.len(), 1, "{calls:?}\n{}", third.log());
}
