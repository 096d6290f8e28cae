//! Switch-over day for the platform the operator replaces, under the platform overlay
//! (`manifests/overlays/platform`) as it ships: its RBAC (KubeVirt rights only in namespace
//! kubevirt) and its Deployment's flags. The gateway's moves are replayed with kubectl:
//! a desk named by a UUID in cyberdesk-system with only `timeoutMs`, its VM and VMI of the
//! same name read in namespace kubevirt.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster};
use cyberdesk_integration::desks::{Apis, desk_yaml, epoch_ms, events_about, jsonpath, now_ms};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorHandle, SimulatorOptions};
use cyberdesk_integration::operator::{
    OperatorProcess, Scrape, SharedOperator, free_addr, metric_sample, register_webhooks,
    start_shared_operator,
};
use cyberdesk_integration::overlay;
use cyberdesk_integration::recorder::{Recorder, Reply};
use cyberdesk_integration::wait::{eventually, until};
use cyberdesk_operator::model::{Delivery, DeliveryOutcome, names};

const OVERLAY: &str = "manifests/overlays/platform";
const DESK_NS: &str = "cyberdesk-system";
const VM_NS: &str = "kubevirt";
/// The orphan sweep's grace in these tests (300 s in a cluster).
const ORPHAN_GRACE_SECS: u64 = 3;
/// Notification attempts in these tests: waits of 1, 2 and 4 s between them.
const NOTIFY_ATTEMPTS: u32 = 4;

/// The gateway's endpoints, recorded, for the whole binary.
fn gateway() -> &'static Recorder {
    static GATEWAY: std::sync::OnceLock<Recorder> = std::sync::OnceLock::new();
    GATEWAY.get_or_init(Recorder::start)
}

fn ready_path(id: &str) -> String {
    format!("/cyberdesk/{id}/ready")
}

/// A fresh UUID-shaped desk name, as the gateway names desks.
fn instance_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{:08x}-{:04x}-4{:03x}-8000-{:012x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos & 0xfff,
        u64::from(nanos) << 8
    )
}

/// The control plane with the APIs, both namespaces and the overlay's RBAC; one operator
/// with the overlay's flags (webhooks registered by URL) and one KubeVirt simulator for
/// namespace kubevirt, both living as long as the test binary.
async fn platform() -> (Cluster, SharedOperator) {
    static INSTALLED: tokio::sync::OnceCell<Vec<String>> = tokio::sync::OnceCell::const_new();
    static OPERATOR: std::sync::OnceLock<Result<SharedOperator, String>> =
        std::sync::OnceLock::new();
    let c = cluster();
    let flags = INSTALLED
        .get_or_init(|| async {
            let flags = overlay::install_platform(&c).await;
            simulator();
            flags
        })
        .await
        .clone();
    let op = OPERATOR.get_or_init(|| {
        let c = c.clone();
        // The overlay's flags, with the gateway's address replaced by the recorder's.
        let mut flags = flags;
        flags.extend([
            "--leader-election=false".to_string(),
            "--policy-dir=/nonexistent".to_string(),
            format!("--orphan-grace-secs={ORPHAN_GRACE_SECS}"),
            format!(
                "--ready-url={}/cyberdesk/{{name}}/ready",
                gateway().base_url()
            ),
            format!("--notify-max-attempts={NOTIFY_ATTEMPTS}"),
            "--notify-timeout-secs=1".to_string(),
            "--extra-san=127.0.0.1".to_string(),
        ]);
        // What the overlay's envFrom gives from Secret cyberdesk-supabase.
        let env = [
            (
                "SUPABASE_URL".to_string(),
                format!("{}/supabase", gateway().base_url()),
            ),
            ("SUPABASE_KEY".to_string(), SUPABASE_KEY.to_string()),
        ];
        start_shared_operator(move || {
            let webhook = free_addr();
            if let Err(e) = register_webhooks(&c, webhook) {
                panic!("registering the webhooks: {e}");
            }
            OperatorProcess::start_with_env(&c, "platform", webhook, &flags, &env)
        })
    });
    match op {
        Ok(op) => (c, op.clone()),
        Err(e) => panic!("operator: {e}"),
    }
}

/// The simulator plays virt-controller in kubevirt on a runtime of its own: every test's
/// runtime ends with the test, and all of them share that one namespace.
fn simulator() -> &'static SimulatorHandle {
    static SIMULATOR: std::sync::OnceLock<SimulatorHandle> = std::sync::OnceLock::new();
    SIMULATOR.get_or_init(|| {
        let c = cluster();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("simulator-keeper".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let client = runtime.block_on(c.client());
                // KubeVirt waits before it restarts a failed VMI of a VM that should run.
                let opts = SimulatorOptions {
                    restart_backoff: Duration::from_secs(5),
                    ..SimulatorOptions::in_namespace(VM_NS)
                };
                let handle = {
                    let _inside = runtime.enter();
                    Simulator::start(client, opts)
                };
                let _ = tx.send(handle);
                runtime.block_on(std::future::pending::<()>())
            })
            .expect("simulator thread");
        rx.recv().expect("simulator started")
    })
}

/// The Supabase project as the operator sees it (the recorder under `/supabase`), and its
/// key, which must never show in the operator's log.
const SUPABASE_KEY: &str = "sb-secret-service-key-7f3a";

fn supabase_path() -> String {
    "/supabase/rest/v1/cyberdesk_instances".to_string()
}

/// The PATCHes of desk `id`'s row, in order: their `status` values.
fn states_written(id: &str) -> Vec<String> {
    gateway()
        .requests_to(&supabase_path())
        .into_iter()
        .filter(|r| r.target.ends_with(&format!("?id=eq.{id}")))
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|b| b["status"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("<{}>", r.body))
        })
        .collect()
}

fn kubectl_ok(c: &Cluster, args: &[&str]) -> String {
    let out = c.kubectl().run(args, None).expect("kubectl");
    out.ok().unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

fn apply(c: &Cluster, yaml: &str) {
    let out = c.kubectl().apply(yaml, &[]).expect("kubectl");
    assert!(out.success, "kubectl apply failed: {}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_desk_runs_in_kubevirt_under_its_own_name_and_goes_with_its_desk() {
    let (c, _op) = platform().await;
    let client = c.client().await;
    let desks = Apis::new(&client, DESK_NS);
    let kubevirt = Apis::new(&client, VM_NS);
    let id = instance_id();
    apply(&c, &desk_yaml(DESK_NS, &id, "{timeoutMs: 600000}"));

    let desk = desks
        .wait_phase(&id, "Running", Duration::from_secs(40))
        .await;
    let status = desk.status.clone().expect("status");
    assert_eq!(status.virtual_machine_ref.as_deref(), Some(id.as_str()));
    // The gateway finds the VM through the previous operator's status block.
    let legacy = |field: &str| {
        jsonpath(
            &c,
            DESK_NS,
            &format!("cyberdesk/{id}"),
            &format!("{{.status.cyberdesk_create.{field}}}"),
        )
    };
    assert_eq!(legacy("virtualMachineRef"), id);
    assert_eq!(legacy("lastPhase"), "Running");
    assert_eq!(
        Some(legacy("startTime")),
        status.start_time.as_deref().map(String::from)
    );
    assert_eq!(
        Some(legacy("expiryTime")),
        status.expiry_time.as_deref().map(String::from)
    );
    // The gateway hears once that the desk is up, and the desk says so.
    let record = wait_ready_record(&desks, &id).await;
    assert_eq!(record.outcome, DeliveryOutcome::Delivered);
    assert_eq!(record.attempts, 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = gateway().requests_to(&ready_path(&id));
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "POST");
    // What the gateway reads: the VMI of the desk's name in kubevirt, its phase and the
    // first interface's address.
    let vmi = format!("vmi/{id}");
    assert_eq!(jsonpath(&c, VM_NS, &vmi, "{.status.phase}"), "Running");
    let ip = jsonpath(&c, VM_NS, &vmi, "{.status.interfaces[0].ipAddress}");
    assert!(!ip.is_empty(), "no address on the VMI");
    assert_eq!(status.ip_address.as_deref(), Some(ip.as_str()));
    // Nothing beside the desk.
    assert!(desks.vms.get_opt(&id).await.expect("get").is_none());
    assert!(
        desks
            .vms
            .get_opt(&format!("cyberdesk-{id}"))
            .await
            .expect("get")
            .is_none()
    );
    // No ownerReference across namespaces (Kubernetes' garbage collector would delete the
    // VM); the labels say whose it is.
    let vm = kubevirt.vms.get(&id).await.expect("vm in kubevirt");
    assert!(vm.metadata.owner_references.is_none(), "{vm:?}");
    let labels = vm.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        ("app", "cyberdesk"),
        (names::LABEL_INSTANCE, id.as_str()),
        (names::LABEL_DESK_NAMESPACE, DESK_NS),
        (
            names::LABEL_DESK_UID,
            desk.metadata.uid.as_deref().unwrap_or("?"),
        ),
        (names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    // The platform's table heard pending (running is the gateway's to write), once.
    eventually(Duration::from_secs(10), "pending written", || async {
        (!states_written(&id).is_empty()).then_some(())
    })
    .await;
    assert_eq!(states_written(&id), ["pending"]);

    // Stopping a desk is deleting it: VM and VMI go, then the desk.
    kubectl_ok(
        &c,
        &["delete", "cyberdesk", &id, "-n", DESK_NS, "--wait=false"],
    );
    eventually(Duration::from_secs(30), "desk, VM and VMI gone", || async {
        let gone = desks.desks.get_opt(&id).await.ok()?.is_none()
            && kubevirt.vms.get_opt(&id).await.ok()?.is_none()
            && kubevirt.vmis.get_opt(&id).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
}

/// The desk's ready record, once the notifier wrote it.
async fn wait_ready_record(desks: &Apis, id: &str) -> Delivery {
    eventually(
        Duration::from_secs(30),
        "the ready call recorded",
        || async {
            let desk = desks.desks.get_opt(id).await.ok()??;
            desk.status?.notifications?.ready
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_call_answered_500_three_times_is_delivered_once_on_the_fourth() {
    let (c, op) = platform().await;
    let client = c.client().await;
    let desks = Apis::new(&client, DESK_NS);
    let id = instance_id();
    gateway().script(&ready_path(&id), Reply::Codes(vec![500, 500, 500, 200]));
    apply(&c, &desk_yaml(DESK_NS, &id, "{timeoutMs: 600000}"));
    desks
        .wait_phase(&id, "Running", Duration::from_secs(40))
        .await;
    let record = wait_ready_record(&desks, &id).await;
    assert_eq!(record.outcome, DeliveryOutcome::Delivered);
    assert_eq!(record.attempts, 4);
    let calls = gateway().requests_to(&ready_path(&id));
    assert_eq!(calls.len(), 4, "{calls:?}");
    let metrics = op.metrics();
    let retried = metric_sample(
        &metrics,
        r#"cyberdesk_notifications_total{result="retried",sink="ready"}"#,
    );
    assert!(retried.is_some_and(|n| n >= 3.0), "{retried:?}");
    kubectl_ok(
        &c,
        &["delete", "cyberdesk", &id, "-n", DESK_NS, "--wait=false"],
    );
}

/// The timeout comes while the ready call is still failing (its four attempts take about
/// 11 s, the desk lives 5 s): the desk is halted at expiry all the same, so the notifier
/// holds up no reconcile; later the call is given up and recorded so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_endpoint_that_never_answers_holds_up_nothing_and_is_given_up() {
    let (c, _op) = platform().await;
    let client = c.client().await;
    let desks = Apis::new(&client, DESK_NS);
    let id = instance_id();
    gateway().script(&ready_path(&id), Reply::Never);
    apply(
        &c,
        &desk_yaml(DESK_NS, &id, "{timeoutMs: 5000, timeoutAction: Stop}"),
    );
    let desk = desks
        .wait_phase(&id, "Running", Duration::from_secs(40))
        .await;
    let started = epoch_ms(&desk.status.and_then(|s| s.start_time).expect("startTime"));
    let timed_out = desks
        .wait_phase(&id, "TimedOut", Duration::from_secs(40))
        .await;
    // What the notifier had done when the halt was seen: called, and not given up.
    let calls_then = gateway().requests_to(&ready_path(&id)).len();
    let events_then = events_about(&c, DESK_NS, &id);
    let seen_at = now_ms();
    assert!(seen_at >= started + 5_000, "timed out before its expiry");
    assert!(
        calls_then >= 1,
        "the ready call had not started when the desk timed out"
    );
    let ready_record = timed_out
        .status
        .as_ref()
        .and_then(|s| s.notifications.as_ref())
        .and_then(|n| n.ready.clone());
    assert!(
        ready_record.is_none()
            && calls_then < NOTIFY_ATTEMPTS as usize
            && !events_then
                .iter()
                .any(|e| e.reason == "ReadyNotificationFailed"),
        "the ready call had ended before the timeout was enforced ({calls_then} calls, record {ready_record:?}): the timeout waited for the notifier"
    );
    let run_strategy = jsonpath(&c, VM_NS, &format!("vm/{id}"), "{.spec.runStrategy}");
    assert_eq!(run_strategy, "Halted");

    // The notifier goes on failing and then gives up.
    let given_up = eventually(
        Duration::from_secs(30),
        "a ReadyNotificationFailed event",
        || async {
            events_about(&c, DESK_NS, &id)
                .into_iter()
                .find(|e| e.reason == "ReadyNotificationFailed")
        },
    )
    .await;
    assert_eq!(given_up.type_, "Warning");
    assert!(given_up.note.contains("4 times"), "{given_up:?}");
    let record = wait_ready_record(&desks, &id).await;
    assert_eq!(record.outcome, DeliveryOutcome::GaveUp);
    assert_eq!(
        gateway().requests_to(&ready_path(&id)).len(),
        NOTIFY_ATTEMPTS as usize
    );
    kubectl_ok(
        &c,
        &["delete", "cyberdesk", &id, "-n", DESK_NS, "--wait=false"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_desk_times_out_sixty_seconds_after_its_vm_started() {
    let (c, _op) = platform().await;
    let client = c.client().await;
    let desks = Apis::new(&client, DESK_NS);
    let kubevirt = Apis::new(&client, VM_NS);
    let id = instance_id();
    // The gateway's smallest session.
    apply(&c, &desk_yaml(DESK_NS, &id, "{timeoutMs: 60000}"));
    let desk = desks
        .wait_phase(&id, "Running", Duration::from_secs(40))
        .await;
    let started = epoch_ms(&desk.status.and_then(|s| s.start_time).expect("startTime"));
    let vm = kubevirt.vms.get(&id).await.expect("vm");
    let vm_created = vm
        .metadata
        .creation_timestamp
        .map(|t| t.0.as_millisecond())
        .expect("creationTimestamp");
    assert!(
        (started - vm_created).abs() <= 1_000,
        "startTime {started} is not the VM's start {vm_created}"
    );
    // timeoutAction defaults to Delete: the desk and its VM go at expiry, not before.
    let gone_at = until(Duration::from_secs(90), || async {
        let gone = desks.desks.get_opt(&id).await.ok()?.is_none()
            && kubevirt.vms.get_opt(&id).await.ok()?.is_none();
        gone.then(now_ms)
    })
    .await
    .expect("the desk and its VM were not gone 90 s after the desk ran");
    let expiry = started + 60_000;
    assert!(
        gone_at >= expiry,
        "gone {} ms before its expiry",
        expiry - gone_at
    );
    assert!(
        gone_at - expiry < 15_000,
        "gone {} ms after its expiry",
        gone_at - expiry
    );
    // The platform's table: pending, then terminated at the timeout, each written once.
    eventually(Duration::from_secs(15), "terminated written", || async {
        states_written(&id)
            .contains(&"terminated".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(states_written(&id), ["pending", "terminated"]);
    let patch = gateway()
        .requests_to(&supabase_path())
        .into_iter()
        .find(|r| r.target.ends_with(&format!("?id=eq.{id}")))
        .expect("a PATCH");
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.target,
        format!("/supabase/rest/v1/cyberdesk_instances?id=eq.{id}")
    );
    assert_eq!(
        patch.headers.get("apikey").map(String::as_str),
        Some(SUPABASE_KEY)
    );
    assert_eq!(
        patch.headers.get("authorization"),
        Some(&format!("Bearer {SUPABASE_KEY}"))
    );
    assert_eq!(
        patch.headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(patch.body, r#"{"status":"pending"}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_vmi_is_written_as_error_once_and_the_key_never_logged() {
    let (c, op) = platform().await;
    let client = c.client().await;
    let desks = Apis::new(&client, DESK_NS);
    let id = instance_id();
    simulator().fail_next_boot(VM_NS, &id);
    apply(&c, &desk_yaml(DESK_NS, &id, "{timeoutMs: 600000}"));
    desks
        .wait_phase(&id, "Failed", Duration::from_secs(40))
        .await;
    eventually(Duration::from_secs(15), "error written", || async {
        states_written(&id)
            .contains(&"error".to_string())
            .then_some(())
    })
    .await;
    // A moment for any repeat to show. KubeVirt restarts a failed VMI of a VM that should
    // run (runStrategy Always) after its backoff, so pending may follow; no state is
    // written twice in a row.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let written = states_written(&id);
    let mut seen = written.clone();
    seen.dedup();
    assert_eq!(seen, written, "a state written twice in a row");
    assert_eq!(written.first().map(String::as_str), Some("pending"));
    assert_eq!(
        written.iter().filter(|s| *s == "error").count(),
        1,
        "{written:?}"
    );
    // The desk records what was written last.
    let last = written.last().cloned().expect("written");
    eventually(
        Duration::from_secs(10),
        "the last state recorded",
        || async {
            let recorded = desks
                .desks
                .get_opt(&id)
                .await
                .ok()??
                .status?
                .notifications?
                .platform_state?
                .value?;
            (recorded == last).then_some(())
        },
    )
    .await;
    assert!(
        !op.log().contains(SUPABASE_KEY),
        "the Supabase key is in the operator's log"
    );
    kubectl_ok(
        &c,
        &["delete", "cyberdesk", &id, "-n", DESK_NS, "--wait=false"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_a_managed_vm_whose_desk_is_gone_and_never_a_foreign_one() {
    let (c, op) = platform().await;
    let client = c.client().await;
    let kubevirt = Apis::new(&client, VM_NS);
    let orphan = instance_id();
    let foreign = instance_id();
    // What a desk removed by force (finalizer stripped) leaves: its VM with the operator's
    // labels and a desk uid no desk has.
    let managed = format!(
        "{{{}: {orphan}, {}: {DESK_NS}, {}: 00000000-0000-4000-8000-00000000dead, {}: {}, app: cyberdesk}}",
        names::LABEL_INSTANCE,
        names::LABEL_DESK_NAMESPACE,
        names::LABEL_DESK_UID,
        names::LABEL_MANAGED_BY,
        names::MANAGED_BY_VALUE
    );
    let vm = |name: &str, labels: &str| {
        format!(
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {VM_NS}, labels: {labels}}}\nspec:\n  runStrategy: Halted\n  template:\n    spec: {{domain: {{devices: {{}}}}}}\n"
        )
    };
    // Someone else's VM, even one that looks like a desk's: no managed-by label.
    apply(
        &c,
        &vm(
            &foreign,
            &format!("{{{}: {foreign}, app: cyberdesk}}", names::LABEL_INSTANCE),
        ),
    );
    let foreign_uid = kubevirt.vms.get(&foreign).await.expect("vm").metadata.uid;
    let created = now_ms();
    apply(&c, &vm(&orphan, &managed));

    let deleted_at = eventually(Duration::from_secs(30), "the orphan deleted", || async {
        kubevirt
            .vms
            .get_opt(&orphan)
            .await
            .ok()?
            .is_none()
            .then(now_ms)
    })
    .await;
    assert!(
        deleted_at - created >= (ORPHAN_GRACE_SECS * 1000) as i64,
        "deleted after {} ms, within the grace period",
        deleted_at - created
    );
    let event = eventually(
        Duration::from_secs(10),
        "an OrphanDeleted event",
        || async {
            events_about(&c, VM_NS, &orphan)
                .into_iter()
                .find(|e| e.reason == "OrphanDeleted")
        },
    )
    .await;
    assert!(event.note.contains(DESK_NS), "{event:?}");
    let deleted = metric_sample(&op.metrics(), "cyberdesk_orphan_vms_deleted_total");
    assert!(deleted.is_some_and(|n| n >= 1.0), "{deleted:?}");
    // Two more sweeps: the foreign VM is still there, untouched.
    tokio::time::sleep(Duration::from_secs(2 * ORPHAN_GRACE_SECS)).await;
    let still = kubevirt.vms.get(&foreign).await.expect("foreign VM kept");
    assert_eq!(still.metadata.uid, foreign_uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_may_touch_virtual_machines_only_in_kubevirt() {
    let (c, _op) = platform().await;
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = c.operator_kubectl().run(&all, None).expect("kubectl");
        out.stdout.trim() == "yes"
    };
    assert!(can(&["create", "virtualmachines.kubevirt.io", "-n", VM_NS]));
    assert!(can(&[
        "watch",
        "virtualmachineinstances.kubevirt.io",
        "-n",
        VM_NS
    ]));
    assert!(!can(&[
        "create",
        "virtualmachines.kubevirt.io",
        "-n",
        DESK_NS
    ]));
    assert!(!can(&[
        "list",
        "virtualmachines.kubevirt.io",
        "--all-namespaces"
    ]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_operators_log_command_finds_the_overlays_pods() {
    let (c, _op) = platform().await;
    // The overlay's Deployment as the apiserver would store it (server-side dry run; the
    // webhook configurations of the render would clash with the tests' URL registrations).
    let objects = overlay::render(&c, OVERLAY);
    let deployment = objects
        .iter()
        .find(|o| o["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment");
    let yaml = serde_yaml::to_string(deployment).expect("YAML");
    let out = c
        .kubectl()
        .apply(&yaml, &["--dry-run=server", "-o", "json"])
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let stored: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    // What `kubectl logs -l app=cyberdesk-operator` selects.
    assert_eq!(
        stored["spec"]["template"]["metadata"]["labels"]["app"],
        "cyberdesk-operator"
    );
    let args = stored["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    for flag in [
        "--vm-namespace=kubevirt",
        "--vm-name-prefix=",
        "--legacy-status",
    ] {
        assert!(args.contains(flag), "{flag} missing from {args}");
    }
}
