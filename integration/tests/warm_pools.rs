//! Warm pools end to end: real apiserver, the KubeVirt simulator booting each VMI in a few
//! seconds (three phase steps), one operator (webhooks registered) for the binary, kubectl
//! as the user.

use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::{Cluster, apply};
use cyberdesk_integration::desks::{desk_namespace, desk_yaml, epoch_ms, now_ms};
use cyberdesk_integration::kubevirt::SimulatorOptions;
use cyberdesk_integration::operator::{Scrape, SharedOperator, metric_sample, webhook_operator};
use cyberdesk_integration::pools::{
    audit, create_pool_desks, pool_vms, pool_yaml, wait_pool_ready,
};
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::model::{CyberdeskPool, VmSource, names};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};

/// Each of the simulator's three steps to Running: a boot takes three times this.
const STEP: Duration = Duration::from_secs(2);
const BOOT: Duration = Duration::from_secs(6);

async fn setup() -> (Cluster, SharedOperator) {
    webhook_operator(&[]).await
}

fn booting_slowly() -> SimulatorOptions {
    SimulatorOptions::default().with_phase_delay(STEP)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_from_a_full_pool_runs_before_a_cold_one_could_boot() {
    let (c, op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-hit", booting_slowly()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 5, maxBooting: 5}"));
    apply(&c, &pool_yaml(&ns, "empty", "{size: 0}"));
    wait_pool_ready(&pools, "warm", 5, Duration::from_secs(60)).await;
    // What an admin sees.
    let listed = c
        .kubectl()
        .run(&["get", "cyberdeskpools", "-n", &ns], None)
        .expect("kubectl");
    let header = listed.stdout.lines().next().unwrap_or_default().to_string();
    for column in ["READY", "BOOTING", "CLAIMED", "DESIRED"] {
        assert!(header.contains(column), "{}", listed.stdout);
    }

    let asked = Instant::now();
    apply(
        &c,
        &desk_yaml(&ns, "hit", "{timeoutMs: 600000, pool: warm}"),
    );
    let desk = apis
        .wait_phase("hit", "Running", Duration::from_secs(30))
        .await;
    let took = asked.elapsed();
    // A VM booted for the desk cannot run before BOOT has passed.
    assert!(took < BOOT / 2, "a pool desk took {took:?} to run");
    let status = desk.status.clone().expect("status");
    assert_eq!(status.source, Some(VmSource::Pool));
    let vm_name = status.virtual_machine_ref.clone().expect("VM ref");
    assert!(vm_name.starts_with("cyberdesk-pool-warm-"), "{vm_name}");
    let vm = apis.vms.get(&vm_name).await.expect("claimed VM");
    assert!(vm.is_claimed_from_pool());
    assert_eq!(vm.instance(), Some("hit"));
    let owners = vm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(Some(&owners[0].uid), desk.metadata.uid.as_ref());
    assert!(status.ip_address.is_some(), "{status:?}");

    // No ready VM in this pool: the desk gets one of its own, booted from the pool's
    // template, and waits the boot time for it.
    let asked = Instant::now();
    apply(
        &c,
        &desk_yaml(&ns, "cold", "{timeoutMs: 600000, pool: empty}"),
    );
    let cold = apis
        .wait_phase("cold", "Running", Duration::from_secs(60))
        .await;
    assert!(asked.elapsed() >= BOOT, "{:?}", asked.elapsed());
    let status = cold.status.expect("status");
    assert_eq!(status.source, Some(VmSource::Cold));
    assert_eq!(
        status.virtual_machine_ref.as_deref(),
        Some("cyberdesk-cold")
    );

    // The pool refills.
    wait_pool_ready(&pools, "warm", 5, Duration::from_secs(60)).await;
    let pool = pools.get("warm").await.expect("pool");
    assert_eq!(pool.status.expect("status").claimed, 1);
    assert_eq!(audit(&apis).await, (1, 1));

    // What Prometheus sees (the operator is shared by this binary's tests: at least).
    let gauge = |state: &str| {
        format!(r#"cyberdesk_pool_vms{{pool="warm",pool_namespace="{ns}",state="{state}"}}"#)
    };
    let text = eventually(Duration::from_secs(30), "the pool gauges", || async {
        let text = op.metrics();
        (metric_sample(&text, &gauge("ready")) == Some(5.0)).then_some(text)
    })
    .await;
    assert_eq!(metric_sample(&text, &gauge("claimed")), Some(1.0), "{text}");
    assert_eq!(metric_sample(&text, &gauge("desired")), Some(5.0), "{text}");
    let hits = metric_sample(&text, r#"cyberdesk_pool_claims_total{result="hit"}"#);
    assert!(hits.is_some_and(|n| n >= 1.0), "{text}");
    let started = |source: &str| {
        metric_sample(
            &text,
            &format!(r#"cyberdesk_desk_start_seconds_count{{source="{source}"}}"#),
        )
    };
    assert!(started("pool").is_some_and(|n| n >= 1.0), "{text}");
    assert!(started("cold").is_some_and(|n| n >= 1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_desks_at_once_against_twenty_ready_vms_make_twenty_claims_and_thirty_cold_vms() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-race", booting_slowly()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 20, maxBooting: 20}"));
    wait_pool_ready(&pools, "warm", 20, Duration::from_secs(90)).await;

    // All at once, as a platform's API would send them. The refill takes a boot, longer
    // than it takes to admit and place fifty desks, so exactly twenty find a ready VM.
    create_pool_desks(&apis, 50, "warm")
        .await
        .expect("create desks");
    eventually(Duration::from_secs(120), "50 desks Running", || async {
        (apis.count_in_phase("Running").await == 50).then_some(())
    })
    .await;
    assert_eq!(audit(&apis).await, (20, 30));
    let claimed = pool_vms(&apis, "warm")
        .await
        .iter()
        .filter(|vm| vm.is_claimed_from_pool())
        .count();
    assert_eq!(claimed, 20);
    wait_pool_ready(&pools, "warm", 20, Duration::from_secs(90)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pool_keeps_claimed_vms_and_scaling_down_deletes_unclaimed_ones() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-drain", SimulatorOptions::default()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 5}"));
    apply(&c, &pool_yaml(&ns, "shrink", "{size: 5}"));
    wait_pool_ready(&pools, "warm", 5, Duration::from_secs(60)).await;
    wait_pool_ready(&pools, "shrink", 5, Duration::from_secs(60)).await;

    // Scaling down deletes unclaimed VMs.
    pools
        .patch(
            "shrink",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"size": 2}})),
        )
        .await
        .expect("scale down");
    eventually(Duration::from_secs(60), "shrink down to 2 VMs", || async {
        (pool_vms(&apis, "shrink").await.len() == 2).then_some(())
    })
    .await;
    wait_pool_ready(&pools, "shrink", 2, Duration::from_secs(30)).await;

    for name in ["a", "b", "c"] {
        apply(&c, &desk_yaml(&ns, name, "{timeoutMs: 600000, pool: warm}"));
    }
    let mut claimed = Vec::new();
    for name in ["a", "b", "c"] {
        let desk = apis
            .wait_phase(name, "Running", Duration::from_secs(30))
            .await;
        let status = desk.status.expect("status");
        assert_eq!(status.source, Some(VmSource::Pool), "{name}");
        claimed.push(status.virtual_machine_ref.expect("ref"));
    }
    pools
        .delete("warm", &DeleteParams::default())
        .await
        .expect("delete pool");
    eventually(Duration::from_secs(60), "the pool gone", || async {
        pools.get_opt("warm").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "only the claimed VMs left",
        || async {
            let mut left: Vec<String> = pool_vms(&apis, "warm")
                .await
                .into_iter()
                .filter_map(|vm| vm.metadata.name)
                .collect();
            left.sort();
            let mut expected = claimed.clone();
            expected.sort();
            (left == expected).then_some(())
        },
    )
    .await;
    for name in ["a", "b", "c"] {
        assert_eq!(apis.phase(name).await.as_deref(), Some("Running"), "{name}");
    }
    // A claimed VM goes with its desk.
    apis.desks
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete desk");
    eventually(
        Duration::from_secs(60),
        "desk a and its VM gone",
        || async {
            let desk_gone = apis.desks.get_opt("a").await.ok()?.is_none();
            let vm_gone = apis.vms.get_opt(&claimed[0]).await.ok()?.is_none();
            (desk_gone && vm_gone).then_some(())
        },
    )
    .await;
    audit(&apis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_desk_times_out_counted_from_its_claim() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-timeout", SimulatorOptions::default()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 1}"));
    wait_pool_ready(&pools, "warm", 1, Duration::from_secs(60)).await;
    // The pool VM is older than the desk will be by this much.
    tokio::time::sleep(Duration::from_secs(8)).await;

    apply(
        &c,
        &desk_yaml(
            &ns,
            "late",
            "{timeoutMs: 30000, timeoutAction: Stop, pool: warm}",
        ),
    );
    let desk = apis
        .wait_phase("late", "Running", Duration::from_secs(30))
        .await;
    let status = desk.status.expect("status");
    let vm = apis
        .vms
        .get(status.virtual_machine_ref.as_deref().expect("ref"))
        .await
        .expect("vm");
    let claimed_at = vm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_CLAIMED_AT))
        .map(|t| epoch_ms(t))
        .expect("claim time");
    let booted = vm
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .expect("creation");
    assert!(
        claimed_at - booted >= 8_000,
        "claimed {claimed_at}, booted {booted}"
    );
    let expiry = epoch_ms(status.expiry_time.as_deref().expect("expiry"));
    assert_eq!(expiry, claimed_at + 30_000);
    assert_eq!(status.start_time.map(|t| epoch_ms(&t)), Some(claimed_at));

    // Still running shortly before; timed out right after.
    // The check must run: a desk seen Running only after that moment proves nothing.
    let before = expiry - 2_000 - now_ms();
    assert!(
        before > 0,
        "the desk was seen Running {} ms after the moment to check it still runs",
        -before
    );
    tokio::time::sleep(Duration::from_millis(before as u64)).await;
    assert_eq!(apis.phase("late").await.as_deref(), Some("Running"));
    apis.wait_phase("late", "TimedOut", Duration::from_secs(10))
        .await;
    let halted_at = now_ms();
    assert!(
        halted_at >= expiry,
        "halted at {halted_at}, expiry {expiry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validating_webhook_reviews_pools_and_pool_desks() {
    let (c, _op) = setup().await;
    let (ns, _apis, _sim) = desk_namespace(&c, "pool-admit", SimulatorOptions::default()).await;
    // What the schema cannot know: whether the template exists and may be used here.
    let out = c
        .kubectl()
        .apply(
            &pool_yaml(&ns, "nowhere", "{size: 1, template: no-such-template}"),
            &["--dry-run=server"],
        )
        .expect("kubectl");
    assert!(!out.success, "{}", out.stdout);
    // The apiserver's own schema check would name no template: this is the webhook's.
    assert!(
        out.stderr
            .contains("VM template no-such-template not found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("cyberdeskpools"), "{}", out.stderr);
    assert!(out.stderr.contains("spec.template"), "{}", out.stderr);
    assert!(out.stderr.contains("no-such-template"), "{}", out.stderr);
    let fine = c
        .kubectl()
        .apply(&pool_yaml(&ns, "fine", "{size: 1}"), &["--dry-run=server"])
        .expect("kubectl");
    assert!(fine.success, "{}", fine.stderr);
    // A pool desk names nothing the pool provides.
    let out = c
        .kubectl()
        .apply(
            &desk_yaml(&ns, "both", "{pool: fine, template: cyberdesk-vm-template}"),
            &["--dry-run=server"],
        )
        .expect("kubectl");
    assert!(!out.success, "{}", out.stdout);
    assert!(out.stderr.contains("spec.pool"), "{}", out.stderr);
}

/// An unclaimed VM holds the pool's user data: past `maxIdleMs` it is deleted and a fresh
/// one booted, counted and announced, with no change to the pool to trigger it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_vm_past_its_maximum_age_is_replaced() {
    let (c, op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "pool-idle", SimulatorOptions::default()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 1, maxIdleMs: 60000}"));
    wait_pool_ready(&pools, "warm", 1, Duration::from_secs(60)).await;
    let first = pool_vms(&apis, "warm").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let old = first[0].metadata.name.clone().expect("name");
    let born = first[0]
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .expect("creation");

    let fresh = eventually(Duration::from_secs(120), "the old VM replaced", || async {
        let vms = pool_vms(&apis, "warm").await;
        let old_gone = vms.iter().all(|vm| {
            vm.metadata.name.as_deref() != Some(old.as_str())
                || vm.metadata.deletion_timestamp.is_some()
        });
        let status = pools.get("warm").await.ok()?.status?;
        let fresh = vms
            .into_iter()
            .find(|vm| vm.metadata.name.as_deref() != Some(old.as_str()))?;
        (old_gone && status.ready == 1).then_some(fresh)
    })
    .await;
    let replaced_at = now_ms();
    assert!(
        replaced_at - born >= 60_000,
        "replaced {} ms after its creation",
        replaced_at - born
    );
    let fresh_born = fresh
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .expect("creation");
    // Creation times are whole seconds.
    assert!(fresh_born >= born + 59_000, "{fresh_born} vs {born}");

    let text = eventually(
        Duration::from_secs(10),
        "the replacement counted",
        || async {
            let text = op.metrics();
            metric_sample(
                &text,
                r#"cyberdesk_pool_vms_replaced_total{reason="expired"}"#,
            )
            .is_some_and(|n| n >= 1.0)
            .then_some(text)
        },
    )
    .await;
    assert!(text.contains("cyberdesk_pool_vms_replaced_total"));
    let events = eventually(
        Duration::from_secs(20),
        "the replacement announced",
        || async {
            let out = c
                .kubectl()
                .run(
                    &[
                        "get",
                        "events",
                        "-n",
                        &ns,
                        "--field-selector",
                        "reason=VirtualMachineExpired",
                        "-o",
                        "jsonpath={.items[*].message}",
                    ],
                    None,
                )
                .ok()?;
            out.stdout.contains(&old).then_some(out.stdout)
        },
    )
    .await;
    assert!(events.contains("maxIdleMs"), "{events}");
}

/// The VMI of a pool VM was started before any desk claimed the VM, so it carries no desk
/// label: its changes must still reach the desk that claimed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_vms_instance_keeps_reporting_to_its_desk() {
    let (c, _op) = setup().await;
    let (ns, apis, sim) = desk_namespace(&c, "pool-vmi", SimulatorOptions::default()).await;
    let pools: Api<CyberdeskPool> = Api::namespaced(c.client().await, &ns);
    apply(&c, &pool_yaml(&ns, "warm", "{size: 1}"));
    wait_pool_ready(&pools, "warm", 1, Duration::from_secs(60)).await;
    apply(
        &c,
        &desk_yaml(&ns, "moved", "{timeoutMs: 600000, pool: warm}"),
    );
    let desk = apis
        .wait_phase("moved", "Running", Duration::from_secs(30))
        .await;
    let status = desk.status.expect("status");
    let vm_name = status.virtual_machine_ref.expect("ref");
    let vmi = apis.vmis.get(&vm_name).await.expect("vmi");
    let vmi_labels = vmi.metadata.labels.clone().unwrap_or_default();
    assert!(
        !vmi_labels.contains_key(names::LABEL_INSTANCE),
        "{vmi_labels:?}"
    );

    let new_ip = sim.change_ip(&ns, &vm_name).await.expect("new address");
    assert_ne!(status.ip_address.as_deref(), Some(new_ip.as_str()));
    eventually(
        Duration::from_secs(20),
        "the desk showing the new address",
        || async {
            let ip = apis.desks.get("moved").await.ok()?.status?.ip_address?;
            (ip == new_ip).then_some(())
        },
    )
    .await;
}
