//! The reconciler end to end: real apiserver, the KubeVirt simulator playing
//! virt-controller in each test's namespace, one operator process (webhooks registered) for
//! the whole binary, and kubectl as the user.

use std::time::{Duration, Instant};

use cyberdesk_integration::e2e::{
    Apis, desk_yaml, eventually, wait_webhooks_active, webhook_operator,
};
use cyberdesk_integration::harness::SharedOperator;
use cyberdesk_integration::kubevirt::{Simulator, SimulatorHandle, SimulatorOptions};
use cyberdesk_integration::shared::{Cluster, namespace};
use cyberdesk_operator::model::conditions::{self, ConditionStatus};

async fn setup() -> (Cluster, SharedOperator) {
    webhook_operator(&[]).await
}

async fn desk_ns(
    c: &Cluster,
    prefix: &str,
    opts: SimulatorOptions,
) -> (String, Apis, SimulatorHandle) {
    let client = c.client().await;
    let ns = namespace(&client, prefix).await;
    let sim = Simulator::start(
        client.clone(),
        SimulatorOptions {
            namespace: Some(ns.clone()),
            ..opts
        },
    );
    let apis = Apis::new(&client, &ns);
    wait_webhooks_active(c, &ns).await;
    (ns, apis, sim)
}

fn apply(c: &Cluster, yaml: &str) {
    let out = c.kubectl().apply(yaml, &[]).expect("kubectl");
    assert!(out.success, "kubectl apply failed: {}", out.stderr);
}

#[tokio::test]
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
    assert_eq!(status.ip_address.as_deref(), vmi.ip_address());
    assert!(status.ip_address.is_some());
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

    let described = eventually(Duration::from_secs(10), "events in describe", || async {
        let out = c
            .kubectl()
            .run(&["describe", "cd", "alice", "-n", &ns], None)
            .ok()?;
        (out.stdout.contains("VirtualMachineCreated") && out.stdout.contains("Ready"))
            .then_some(out.stdout)
    })
    .await;
    assert!(described.contains("cyberdesk-alice"));
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

#[tokio::test]
async fn timeout_delete_halts_then_deletes_and_the_vm_goes_first() {
    let (c, op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "timeout-delete", SimulatorOptions::default()).await;
    apply(&c, &desk_yaml(&ns, "short", "{timeoutMs: 3000}"));
    let desk = apis
        .wait_phase("short", "Running", Duration::from_secs(30))
        .await;
    let expiry = desk.status.and_then(|s| s.expiry_time).expect("expiry");
    // Gone entirely: the VM and VMI must never outlive the Cyberdesk.
    let start = Instant::now();
    loop {
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
        if !desk_exists {
            assert!(
                !vm_exists && !vmi_exists,
                "the Cyberdesk disappeared before its VM"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not deleted after its timeout (expiry {expiry})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = c
        .kubectl()
        .run(&["get", "events", "-n", &ns, "-o", "json"], None)
        .expect("kubectl")
        .stdout;
    assert!(events.contains("TimedOut"), "no TimedOut event");
    assert!(op.metrics().contains("cyberdesk_vm_timeout_total"));
}

#[tokio::test]
async fn timeout_stop_keeps_both_with_the_vm_halted() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "timeout-stop", SimulatorOptions::default()).await;
    apply(
        &c,
        &desk_yaml(&ns, "keep", "{timeoutMs: 3000, timeoutAction: Stop}"),
    );
    apis.wait_phase("keep", "Running", Duration::from_secs(30))
        .await;
    let desk = apis
        .wait_phase("keep", "TimedOut", Duration::from_secs(30))
        .await;
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        apis.desks.get_opt("keep").await.expect("get").is_some(),
        "Stop must keep the Cyberdesk"
    );
    assert_eq!(apis.phase("keep").await.as_deref(), Some("TimedOut"));
}

#[tokio::test]
async fn extending_the_timeout_before_expiry_postpones_it() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_ns(&c, "extend", SimulatorOptions::default()).await;
    apply(
        &c,
        &desk_yaml(&ns, "longer", "{timeoutMs: 5000, timeoutAction: Stop}"),
    );
    let desk = apis
        .wait_phase("longer", "Running", Duration::from_secs(30))
        .await;
    let first = desk.status.and_then(|s| s.expiry_time).expect("expiry");
    apply(
        &c,
        &desk_yaml(&ns, "longer", "{timeoutMs: 600000, timeoutAction: Stop}"),
    );
    let moved = eventually(Duration::from_secs(10), "expiry to move", || async {
        let exp = apis.desks.get("longer").await.ok()?.status?.expiry_time?;
        (exp != first).then_some(exp)
    })
    .await;
    assert!(moved > first, "expiry moved backwards: {first} -> {moved}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        apis.phase("longer").await.as_deref(),
        Some("Running"),
        "timed out at the old expiry"
    );
    let vm = apis.vms.get("cyberdesk-longer").await.expect("vm");
    assert_eq!(vm.run_strategy(), Some("Always"));
}

#[tokio::test]
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
    let mut saw_terminating = false;
    let start = Instant::now();
    loop {
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
                break;
            }
            Some(d) => {
                if d.status.and_then(|s| s.phase).map(|p| p.as_str()) == Some("Terminating") {
                    saw_terminating = true;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "deletion did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        saw_terminating,
        "never reported phase Terminating while cleaning up"
    );
}

#[tokio::test]
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
    let events = c
        .kubectl()
        .run(&["get", "events", "-n", &ns, "-o", "json"], None)
        .expect("kubectl")
        .stdout;
    assert!(
        events.contains("TemplateInvalid") && events.contains("Warning"),
        "no Warning event"
    );

    let fixed = "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec:\n  template:\n    spec: {hostname: '${vm_name}', domain: {devices: {}}}\n";
    apply(&c, &template(fixed));
    apis.wait_phase("tpl", "Running", Duration::from_secs(30))
        .await;
}
