//! The events no other test reads, seen the way a user sees them (`kubectl get events`):
//! `PlatformStateFailed` when the platform state sink gives up, `VirtualMachineClaimed`
//! when a desk takes a warm-pool VM, and `DeletingVirtualMachine` then `CleanedUp` when a
//! desk is deleted.
//!
//! One test: the operator serves exactly one namespace (the sink needs that), so the
//! checks share it and one simulator.

use std::time::Duration;

use cyberdesk_integration::cluster::{apply, cluster, install_everything};
use cyberdesk_integration::desks::{
    Apis, desk_yaml, events_about, wait_event, wait_webhooks_active,
};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, free_addr, register_webhooks};
use cyberdesk_integration::pools::{pool_yaml, wait_pool_ready};
use cyberdesk_integration::recorder::{Recorder, Reply};
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::model::CyberdeskPool;
use kube::Api;

/// The one namespace the operator serves (the Supabase sink needs exactly one).
const NS: &str = "events-desks";
const SUPABASE_PATH: &str = "/supabase/rest/v1/cyberdesk_instances";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_state_claim_and_deletion_events_are_published() {
    let c = cluster();
    install_everything(&c).await;
    let created = c
        .kubectl()
        .run(&["create", "namespace", NS], None)
        .expect("kubectl");
    assert!(created.success, "{}", created.stderr);
    // Supabase refuses every write; one attempt each, so the sink gives up at once.
    let supabase = Recorder::start();
    supabase.script(SUPABASE_PATH, Reply::Codes(vec![500]));
    let webhook = free_addr();
    register_webhooks(&c, webhook).expect("webhook configurations");
    let flags = [
        "--leader-election=false",
        "--policy-dir=/nonexistent",
        "--extra-san=127.0.0.1",
        "--notify-max-attempts=1",
        "--notify-timeout-secs=1",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--desk-namespaces={NS}")])
    .collect::<Vec<_>>();
    let env = [
        (
            "SUPABASE_URL".to_string(),
            format!("{}/supabase", supabase.base_url()),
        ),
        ("SUPABASE_KEY".to_string(), "test-key".to_string()),
    ];
    let op = OperatorProcess::start_with_env(&c, "events", webhook, &flags, &env);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    let client = c.client().await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::default().within(NS));
    wait_webhooks_active(&c, NS).await;
    let apis = Apis::new(&client, NS);

    // PlatformStateFailed: the desk's first state (`pending`) cannot be written.
    apply(&c, &desk_yaml(NS, "lonely", "{timeoutMs: 600000}"));
    let failed = wait_event(
        &c,
        NS,
        "lonely",
        "PlatformStateFailed",
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(failed.type_, "Warning", "{failed:?}");
    assert!(
        failed.note.contains("writing platform state")
            && failed.note.contains("failed 1 times")
            && failed.note.contains("gave up"),
        "{failed:?}"
    );
    assert!(
        !supabase.requests_to(SUPABASE_PATH).is_empty(),
        "no write reached the sink"
    );

    // VirtualMachineClaimed: a desk takes the pool's booted VM.
    let pools: Api<CyberdeskPool> = Api::namespaced(client.clone(), NS);
    apply(&c, &pool_yaml(NS, "warm", "{size: 1}"));
    wait_pool_ready(&pools, "warm", 1, Duration::from_secs(60)).await;
    apply(
        &c,
        &desk_yaml(NS, "pooled", "{timeoutMs: 600000, pool: warm}"),
    );
    let desk = apis
        .wait_phase("pooled", "Running", Duration::from_secs(60))
        .await;
    let vm = desk
        .status
        .and_then(|s| s.virtual_machine_ref)
        .expect("the claimed VM");
    let claimed = wait_event(
        &c,
        NS,
        "pooled",
        "VirtualMachineClaimed",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(claimed.type_, "Normal", "{claimed:?}");
    assert_eq!(
        claimed.note,
        format!("claimed VirtualMachine {vm} from pool warm")
    );

    // DeletingVirtualMachine, then CleanedUp once the VM and its VMI are gone.
    apis.wait_phase("lonely", "Running", Duration::from_secs(60))
        .await;
    let deleted = c
        .kubectl()
        .run(&["delete", "cd", "lonely", "-n", NS, "--wait=false"], None)
        .expect("kubectl");
    assert!(deleted.success, "{}", deleted.stderr);
    eventually(Duration::from_secs(60), "the desk gone", || async {
        apis.desks
            .get_opt("lonely")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        apis.vms
            .get_opt("cyberdesk-lonely")
            .await
            .expect("read VM")
            .is_none()
    );
    // Events go out from background lanes: the last may follow the desk's removal.
    wait_event(&c, NS, "lonely", "CleanedUp", Duration::from_secs(30)).await;
    let seen = events_about(&c, NS, "lonely");
    let at = |reason: &str| {
        seen.iter()
            .position(|e| e.reason == reason)
            .unwrap_or_else(|| panic!("no {reason} event: {seen:?}"))
    };
    let (deleting, cleaned) = (at("DeletingVirtualMachine"), at("CleanedUp"));
    assert_eq!(
        seen[deleting].note, "deleting VirtualMachine cyberdesk-lonely",
        "{seen:?}"
    );
    assert_eq!(
        seen[cleaned].note, "VirtualMachine cyberdesk-lonely is gone",
        "{seen:?}"
    );
    assert!(
        seen[deleting].type_ == "Normal" && seen[cleaned].type_ == "Normal",
        "{seen:?}"
    );
}
