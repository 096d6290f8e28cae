//! The reconciler end to end: real apiserver, the KubeVirt simulator playing
//! virt-controller in each test's namespace, one operator process (webhooks registered) for
//! the whole binary, and kubectl as the user.

use std::time::Duration;

use cyberdesk_integration::cluster::Cluster;
use cyberdesk_integration::desks::{
    Apis, desk_namespace, desk_yaml, epoch_ms, events_about, jsonpath, now_ms, wait_event,
};
use cyberdesk_integration::kubevirt::{SimulatorHandle, SimulatorOptions};
use cyberdesk_integration::operator::{Scrape, SharedOperator, webhook_operator};
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::model::conditions::{self, ConditionStatus};

async fn setup() -> (Cluster, SharedOperator) {
    webhook_operator(&[]).await
}

async fn desk_ns(
    c: &Cluster,
    prefix: &str,
    opts: SimulatorOptions,
) -> (String, Apis, SimulatorHandle) {
    desk_namespace(c, prefix, opts).await
}

/// How late a timeout may land. The operator requeues a desk for the instant of its expiry,
/// so it acts within milliseconds; the rest is room for a loaded machine. A reconciler that
/// only noticed expiries on a periodic resync (or a 25 s poll) misses this.
const TIMEOUT_BOUND_MS: i64 = 2_000;

fn apply(c: &Cluster, yaml: &str) {
    let out = c.kubectl().apply(yaml, &[]).expect("kubectl");
    assert!(out.success, "kubectl apply failed: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_the_vm_and_reports_running_with_the_vmi_ip() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "running", SimulatorOptions::default()).await;
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cloud, namespace: {ns}}}\nstringData: {{userdata: \"#cloud-config\\nhostname: desk\\n\"}}\n"
    );
    apply(&c, &secret);
    apply(
        &c,
        &desk_yaml(
            &ns,
            "alice",
            "{timeoutMs: 600000, userDataSecretRef: {name: cloud, key: userdata}}",
        ),
    );

    let desk = apis
        .wait_phase("alice", "Running", Duration::from_secs(30))
        .await;
    let status = desk.status.expect("status");
    let vm = apis.vms.get("cyberdesk-alice").await.expect("vm exists");
    let vmi = apis.vmis.get("cyberdesk-alice").await.expect("vmi exists");
    assert_eq!(
        status.virtual_machine_ref.as_deref(),
        Some("cyberdesk-alice")
    );
    // The address the guest agent reported on the VMI, read as raw JSON.
    let reported = jsonpath(
        &c,
        &ns,
        "vmi/cyberdesk-alice",
        "{.status.interfaces[0].ipAddress}",
    );
    assert!(!reported.is_empty(), "the simulator reported no address");
    assert_eq!(status.ip_address.as_deref(), Some(reported.as_str()));
    let _ = vmi;
    assert_eq!(status.vmi_phase.as_deref(), Some("Running"));
    assert!(status.expiry_time.is_some() && status.start_time.is_some());
    let labels = vm.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("app", "cyberdesk"),
        ("cyberdesk-instance", "alice"),
        ("managed-by", "cyberdesk-operator"),
        ("app.kubernetes.io/managed-by", "cyberdesk-operator"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert_eq!(vm.run_strategy(), Some("Always"));
    assert!(vm.spec.running.is_none());
    let owner = vm.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.uid.as_str()),
        desk.metadata.uid.as_deref()
    );
    // The shipped template hands KubeVirt the Secret by name; the value stays in the Secret.
    let vm_json = serde_json::to_value(&vm).expect("vm json");
    let cloud_init = vm_json
        .pointer("/spec/template/spec/volumes")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .find_map(|v| v.get("cloudInitNoCloud"))
        .expect("a cloudInitNoCloud volume");
    assert_eq!(cloud_init["secretRef"]["name"], "cloud", "{cloud_init}");
    assert!(cloud_init.get("userDataBase64").is_none(), "{cloud_init}");
    let ready = conditions::find(&status.conditions, conditions::READY).expect("Ready condition");
    assert_eq!(ready.status, ConditionStatus::True);

    let created = wait_event(
        &c,
        &ns,
        "alice",
        "VirtualMachineCreated",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(created.type_, "Normal");
    assert_eq!(created.note, "created VirtualMachine cyberdesk-alice");
    let ready = wait_event(&c, &ns, "alice", "Ready", Duration::from_secs(10)).await;
    assert_eq!(ready.note, format!("desktop running at {reported}"));
    // And where a user looks: the Events section of `kubectl describe`.
    let described = c
        .kubectl()
        .run(&["describe", "cd", "alice", "-n", &ns], None)
        .expect("kubectl")
        .stdout;
    let events_section = described.split("\nEvents:").nth(1).unwrap_or("");
    assert!(
        events_section.contains("VirtualMachineCreated")
            && events_section.contains("created VirtualMachine cyberdesk-alice"),
        "{described}"
    );
    let table = c
        .kubectl()
        .run(&["get", "cyberdesks", "-n", &ns], None)
        .expect("kubectl")
        .stdout;
    assert!(
        table.contains("Running") && table.contains("cyberdesk-alice"),
        "{table}"
    );
}

fn timeouts_counted(op: &SharedOperator) -> f64 {
    op.metric("cyberdesk_vm_timeout_total")
        .expect("cyberdesk_vm_timeout_total in a successful scrape")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_delete_fires_at_expiry_and_the_vm_goes_first() {
    let (c, op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "timeout-delete", SimulatorOptions::default()).await;
    apply(&c, &desk_yaml(&ns, "short", "{timeoutMs: 600000}"));
    apis.wait_phase("short", "Running", Duration::from_secs(30))
        .await;
    let counted_before = timeouts_counted(&op);
    let expiry = apis
        .expire_in(&c, "short", "", Duration::from_secs(3))
        .await;
    // Gone entirely, not before the expiry and soon after it; the VM and VMI never outlive
    // the Cyberdesk.
    let gone = || async {
        let desk_exists = apis.desks.get_opt("short").await.expect("get").is_some();
        let vm_exists = apis
            .vms
            .get_opt("cyberdesk-short")
            .await
            .expect("get")
            .is_some();
        let vmi_exists = apis
            .vmis
            .get_opt("cyberdesk-short")
            .await
            .expect("get")
            .is_some();
        let now = now_ms();
        if !desk_exists {
            assert!(
                !vm_exists && !vmi_exists,
                "the Cyberdesk disappeared before its VM"
            );
            assert!(
                now >= expiry,
                "deleted {} ms before its expiry",
                expiry - now
            );
            return Some(now);
        }
        assert!(
            now <= expiry + TIMEOUT_BOUND_MS,
            "still there {} ms after its expiry",
            now - expiry
        );
        None
    };
    // The bound inside is the tight one; `within` only stops a hung look. It is the same as
    // Stop's: the deletion comes with the halt (or the pass the halted VM's event brings),
    // never with the fallback requeue (`HALT_FOLLOW_UP`, 5 s) or a cleanup recheck.
    let gone_at = eventually(Duration::from_secs(60), "the desk deleted", gone).await;
    eprintln!(
        "desk, VM and VMI gone {} ms after the expiry",
        gone_at - expiry
    );
    let events = events_about(&c, &ns, "short");
    let timed_out = events
        .iter()
        .find(|e| e.reason == "TimedOut")
        .expect("a TimedOut event");
    assert!(
        timed_out.note.starts_with("timed out after ")
            && timed_out
                .note
                .ends_with("halted VirtualMachine cyberdesk-short"),
        "{timed_out:?}"
    );
    assert!(
        events.iter().any(|e| e.reason == "Deleting"),
        "no Deleting event: {events:?}"
    );
    assert!(timeouts_counted(&op) > counted_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_stop_fires_at_expiry_and_stays_timed_out() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "timeout-stop", SimulatorOptions::default()).await;
    let stop = "timeoutAction: Stop";
    apply(
        &c,
        &desk_yaml(&ns, "keep", &format!("{{timeoutMs: 600000, {stop}}}")),
    );
    apis.wait_phase("keep", "Running", Duration::from_secs(30))
        .await;
    let expiry = apis
        .expire_in(&c, "keep", stop, Duration::from_secs(3))
        .await;
    // Running up to the expiry, TimedOut right after it.
    let timed_out = || async {
        let phase = apis.phase("keep").await;
        let now = now_ms();
        if phase.as_deref() == Some("TimedOut") {
            assert!(
                now >= expiry,
                "TimedOut {} ms before its expiry",
                expiry - now
            );
            return Some(now);
        }
        assert_eq!(phase.as_deref(), Some("Running"), "before its expiry");
        assert!(
            now <= expiry + TIMEOUT_BOUND_MS,
            "not TimedOut {} ms after its expiry",
            now - expiry
        );
        None
    };
    let timed_out_at = eventually(Duration::from_secs(60), "TimedOut", timed_out).await;
    eprintln!(
        "TimedOut seen {} ms after the expiry",
        timed_out_at - expiry
    );
    let desk = apis.desks.get("keep").await.expect("desk");
    let timed_out = desk
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::TIMED_OUT).cloned());
    assert_eq!(timed_out.map(|c| c.status), Some(ConditionStatus::True));
    let vm = apis.vms.get("cyberdesk-keep").await.expect("VM kept");
    assert_eq!(vm.run_strategy(), Some("Halted"));
    eventually(Duration::from_secs(20), "the VMI to stop", || async {
        apis.vmis
            .get_opt("cyberdesk-keep")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let halts = |c: &Cluster| {
        events_about(c, &ns, "keep")
            .iter()
            .filter(|e| e.reason == "TimedOut")
            .map(|e| e.count)
            .sum::<u64>()
    };
    eventually(Duration::from_secs(10), "the TimedOut event", || async {
        (halts(&c) == 1).then_some(())
    })
    .await;

    // Sticky: a longer timeout does not bring the desk back.
    apply(
        &c,
        &desk_yaml(&ns, "keep", &format!("{{timeoutMs: 86400000, {stop}}}")),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(apis.phase("keep").await.as_deref(), Some("TimedOut"));
    let vm = apis.vms.get("cyberdesk-keep").await.expect("VM kept");
    assert_eq!(
        vm.run_strategy(),
        Some("Halted"),
        "revived by a longer timeout"
    );

    // Sticky: a run strategy set back by hand is halted again.
    let out = c
        .kubectl()
        .run(
            &[
                "patch",
                "vm",
                "cyberdesk-keep",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"spec":{"runStrategy":"Always"}}"#,
            ],
            None,
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    eventually(Duration::from_secs(10), "the VM halted again", || async {
        let vm = apis.vms.get("cyberdesk-keep").await.ok()?;
        (vm.run_strategy() == Some("Halted")).then_some(())
    })
    .await;
    assert_eq!(apis.phase("keep").await.as_deref(), Some("TimedOut"));
    // Halted again, said so, and not a second timeout.
    let reapplied = |c: &Cluster| {
        events_about(c, &ns, "keep")
            .iter()
            .filter(|e| e.reason == "TimeoutReapplied")
            .map(|e| e.count)
            .sum::<u64>()
    };
    eventually(
        Duration::from_secs(10),
        "a TimeoutReapplied event",
        || async { (reapplied(&c) == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        halts(&c),
        1,
        "the re-halt was announced as a second timeout"
    );
    assert!(
        apis.desks.get_opt("keep").await.expect("get").is_some(),
        "Stop must keep the Cyberdesk"
    );

    // timeoutAction: Delete on a desk that already timed out deletes it, VM first.
    apply(
        &c,
        &desk_yaml(&ns, "keep", "{timeoutMs: 86400000, timeoutAction: Delete}"),
    );
    eventually(
        Duration::from_secs(20),
        "the timed-out desk deleted",
        || async {
            let desk = apis.desks.get_opt("keep").await.ok()?;
            let vm = apis.vms.get_opt("cyberdesk-keep").await.ok()?;
            if desk.is_none() {
                assert!(vm.is_none(), "the Cyberdesk disappeared before its VM");
                return Some(());
            }
            None
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extending_the_timeout_before_expiry_postpones_it() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "extend", SimulatorOptions::default()).await;
    let stop = "timeoutAction: Stop";
    apply(
        &c,
        &desk_yaml(&ns, "longer", &format!("{{timeoutMs: 600000, {stop}}}")),
    );
    apis.wait_phase("longer", "Running", Duration::from_secs(30))
        .await;
    let first = apis
        .expire_in(&c, "longer", stop, Duration::from_secs(4))
        .await;
    apply(
        &c,
        &desk_yaml(&ns, "longer", &format!("{{timeoutMs: 86400000, {stop}}}")),
    );
    let moved = eventually(Duration::from_secs(3), "expiry to move", || async {
        let exp = apis.desks.get("longer").await.ok()?.status?.expiry_time?;
        (epoch_ms(&exp) != first).then(|| epoch_ms(&exp))
    })
    .await;
    assert!(moved > first, "expiry moved backwards: {first} -> {moved}");
    let wait = (first + TIMEOUT_BOUND_MS - now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    assert_eq!(
        apis.phase("longer").await.as_deref(),
        Some("Running"),
        "timed out at the old expiry"
    );
    let vm = apis.vms.get("cyberdesk-longer").await.expect("vm");
    assert_eq!(vm.run_strategy(), Some("Always"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_deleted_by_hand_comes_back_with_the_same_start_and_expiry() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "recreate", SimulatorOptions::default()).await;
    apply(&c, &desk_yaml(&ns, "again", "{timeoutMs: 600000}"));
    let desk = apis
        .wait_phase("again", "Running", Duration::from_secs(30))
        .await;
    let status = desk.status.expect("status");
    let first_uid = apis
        .vms
        .get("cyberdesk-again")
        .await
        .expect("vm")
        .metadata
        .uid;
    let out = c
        .kubectl()
        .run(
            &["delete", "vm", "cyberdesk-again", "-n", &ns, "--wait=false"],
            None,
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let second_uid = eventually(Duration::from_secs(30), "a new VM", || async {
        let vm = apis.vms.get_opt("cyberdesk-again").await.ok()??;
        (vm.metadata.uid != first_uid && vm.metadata.deletion_timestamp.is_none())
            .then_some(vm.metadata.uid)
    })
    .await;
    assert!(second_uid.is_some());
    let desk = apis
        .wait_phase("again", "Running", Duration::from_secs(30))
        .await;
    let again = desk.status.expect("status");
    assert_eq!(again.start_time, status.start_time, "startTime moved");
    assert_eq!(again.expiry_time, status.expiry_time, "expiryTime moved");
    let created = events_about(&c, &ns, "again")
        .iter()
        .filter(|e| e.reason == "VirtualMachineCreated")
        .map(|e| e.count)
        .sum::<u64>();
    assert_eq!(created, 2, "one VirtualMachineCreated per VM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_the_desk_does_not_own_is_left_alone() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "conflict", SimulatorOptions::default()).await;
    // Someone else's VM, already holding the name the desk's VM would get.
    let foreign = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: cyberdesk-taken, namespace: {ns}, labels: {{owner: someone-else}}}}\nspec:\n  runStrategy: Halted\n  template:\n    spec: {{domain: {{devices: {{}}}}}}\n"
    );
    apply(&c, &foreign);
    let before = apis.vms.get("cyberdesk-taken").await.expect("vm");
    apply(&c, &desk_yaml(&ns, "taken", "{timeoutMs: 600000}"));
    let conflict = wait_event(
        &c,
        &ns,
        "taken",
        "VirtualMachineConflict",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(conflict.type_, "Warning");
    assert!(
        conflict.note.contains("cyberdesk-taken") && conflict.note.contains("not controlled"),
        "{conflict:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = apis.vms.get("cyberdesk-taken").await.expect("vm");
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.metadata.labels, before.metadata.labels,
        "labels changed"
    );
    assert!(after.metadata.owner_references.is_none(), "adopted");
    assert_eq!(after.run_strategy(), Some("Halted"), "started");
    assert_ne!(apis.phase("taken").await.as_deref(), Some("Running"));
    // The conflict is looked at again every 15 s; the repeat counts up one event's series.
    let conflicts = || {
        events_about(&c, &ns, "taken")
            .into_iter()
            .filter(|e| e.reason == "VirtualMachineConflict")
            .map(|e| e.count)
            .collect::<Vec<_>>()
    };
    eventually(
        Duration::from_secs(40),
        "one VirtualMachineConflict event counting 2",
        || async { (conflicts().first() >= Some(&2)).then_some(()) },
    )
    .await;
    assert_eq!(conflicts().len(), 1, "a repeat made a new event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_desk_removes_vm_and_vmi_before_the_desk() {
    let (c, _op) = setup().await;
    // A slow VMI shutdown makes the window in which the order could go wrong visible.
    let opts = SimulatorOptions {
        shutdown: Duration::from_secs(2),
        ..Default::default()
    };
    let (ns, apis, _sim) = desk_ns(&c, "delete", opts).await;
    apply(&c, &desk_yaml(&ns, "gone", "{}"));
    apis.wait_phase("gone", "Running", Duration::from_secs(30))
        .await;
    let out = c
        .kubectl()
        .run(&["delete", "cd", "gone", "-n", &ns, "--wait=false"], None)
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let saw_terminating = std::cell::Cell::new(false);
    let deleted = || async {
        let desk = apis.desks.get_opt("gone").await.expect("get");
        let vm = apis
            .vms
            .get_opt("cyberdesk-gone")
            .await
            .expect("get")
            .is_some();
        let vmi = apis
            .vmis
            .get_opt("cyberdesk-gone")
            .await
            .expect("get")
            .is_some();
        match desk {
            None => {
                assert!(!vm && !vmi, "Cyberdesk gone while its VM or VMI exists");
                Some(())
            }
            Some(d) => {
                if d.status.and_then(|s| s.phase).map(|p| p.as_str()) == Some("Terminating") {
                    saw_terminating.set(true);
                }
                None
            }
        }
    };
    eventually(Duration::from_secs(30), "the deletion to finish", deleted).await;
    assert!(
        saw_terminating.get(),
        "never reported phase Terminating while cleaning up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_template_is_reported_and_retried_once_fixed() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "template", SimulatorOptions::default()).await;
    let template = |body: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tpl-{ns}, namespace: cyberdesk-system, labels: {{cyberdesk.io/template: \"true\"}}}}\ndata:\n  template.yaml: |\n{}",
            body.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        )
    };
    let broken = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec: {hostname: '${owner}'}\n";
    apply(&c, &template(broken));
    // The webhook learns of a new template through its watch; until then it says not found.
    let desk = desk_yaml(&ns, "tpl", &format!("{{template: tpl-{ns}}}"));
    eventually(Duration::from_secs(15), "the desk admitted", || async {
        c.kubectl().apply(&desk, &[]).ok()?.success.then_some(())
    })
    .await;
    let desk = apis
        .wait_phase("tpl", "Failed", Duration::from_secs(30))
        .await;
    let cond = desk
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::TEMPLATE_VALID).cloned());
    let cond = cond.expect("TemplateValid condition");
    assert_eq!(cond.status, ConditionStatus::False);
    assert!(cond.message.contains("owner"), "{}", cond.message);
    assert!(
        apis.vms
            .get_opt("cyberdesk-tpl")
            .await
            .expect("get")
            .is_none(),
        "half-made VM"
    );
    // Reason and type on the same event about this desk.
    let event = wait_event(&c, &ns, "tpl", "TemplateInvalid", Duration::from_secs(10)).await;
    assert_eq!(event.type_, "Warning", "{event:?}");
    assert!(event.note.contains("owner"), "{event:?}");

    let fixed = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec: {hostname: '${vm_name}', domain: {devices: {}}}\n";
    apply(&c, &template(fixed));
    apis.wait_phase("tpl", "Running", Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_kubevirt_refuses_is_reported_as_create_rejected() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "rejected", SimulatorOptions::default()).await;
    // Renders fine, but names a disk without a volume: virt-api refuses such a VM.
    let template = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: nodisk-{ns}, namespace: cyberdesk-system, labels: {{cyberdesk.io/template: \"true\"}}}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec:\n      template:\n        spec:\n          domain: {{devices: {{disks: [{{name: rootdisk, disk: {{bus: virtio}}}}]}}}}\n          volumes: []\n"
    );
    apply(&c, &template);
    let desk = desk_yaml(
        &ns,
        "refused",
        &format!("{{timeoutMs: 600000, template: nodisk-{ns}}}"),
    );
    // The webhook learns of a new template through its watch; until then it says not found.
    eventually(Duration::from_secs(15), "the desk admitted", || async {
        c.kubectl().apply(&desk, &[]).ok()?.success.then_some(())
    })
    .await;
    let event = wait_event(
        &c,
        &ns,
        "refused",
        "CreateRejected",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(event.type_, "Warning");
    assert!(
        event
            .note
            .contains("the apiserver rejected VirtualMachine cyberdesk-refused")
            && event.note.contains("disk"),
        "{event:?}"
    );
    let created = apis
        .wait_condition(
            "refused",
            conditions::VM_CREATED,
            "CreateRejected",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(created.status, ConditionStatus::False);
    assert_eq!(apis.phase("refused").await.as_deref(), Some("Failed"));
    assert!(
        apis.vms
            .get_opt("cyberdesk-refused")
            .await
            .expect("get")
            .is_none(),
        "a refused VM exists"
    );
}
