//! Switch-over from the previous (kopf) operator: its desks and VMs as it left them (kopf's
//! finalizer, the `cyberdesk_create` status block, a Running VM in kubevirt without
//! ownerReference or this operator's labels). `migrate --dry-run` shows the plan and
//! changes nothing; then the operator starts under the platform overlay and adopts.

use std::process::Command;
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster};
use cyberdesk_integration::desks::{Apis, epoch_ms, events_about, jsonpath, wait_event};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, Scrape, free_addr};
use cyberdesk_integration::overlay;
use cyberdesk_integration::wait::eventually;
use cyberdesk_integration::workspace::operator_binary;
use cyberdesk_operator::controller::desk::adoption::KOPF_FINALIZER;
use cyberdesk_operator::controller::desk::expiry;
use cyberdesk_operator::model::names;
use cyberdesk_operator::time;

const DESK_NS: &str = "cyberdesk-system";
const VM_NS: &str = "kubevirt";
const ID: &str = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
const STRAY: &str = "stray-vm";

fn kubectl_ok(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = c.kubectl().run(args, stdin).expect("kubectl");
    out.ok().unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// A VM as the previous operator made it: its labels only, no ownerReference.
fn old_vm(name: &str, instance: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {VM_NS}, labels: {{app: cyberdesk, cyberdesk-instance: {instance}}}}}\nspec:\n  runStrategy: Always\n  template:\n    spec: {{domain: {{devices: {{}}}}}}\n"
    )
}

fn migrate(c: &Cluster, args: &[&str]) -> std::process::Output {
    Command::new(operator_binary())
        .arg("migrate")
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env_remove("CYBERDESK_VM_NAMESPACE")
        .env_remove("CYBERDESK_VM_NAME_PREFIX")
        .env_remove("CYBERDESK_DESK_NAMESPACES")
        .output()
        .expect("run migrate")
}

/// resourceVersions of the desk and both VMs: what a dry run must leave as it is.
fn versions(c: &Cluster) -> Vec<String> {
    vec![
        jsonpath(
            c,
            DESK_NS,
            &format!("cyberdesk/{ID}"),
            "{.metadata.resourceVersion}",
        ),
        jsonpath(c, VM_NS, &format!("vm/{ID}"), "{.metadata.resourceVersion}"),
        jsonpath(
            c,
            VM_NS,
            &format!("vm/{STRAY}"),
            "{.metadata.resourceVersion}",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_operators_desk_is_adopted_with_its_vm_and_expiry() {
    let c = cluster();
    let mut flags = overlay::install_platform(&c).await;
    let client = c.client().await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(VM_NS));
    let desks = Apis::new(&client, DESK_NS);
    let kubevirt = Apis::new(&client, VM_NS);

    // What the previous operator left: the VM running, the desk with its finalizer and
    // status block, and a VM of a desk long gone.
    kubectl_ok(&c, &["apply", "-f", "-"], Some(&old_vm(ID, ID)));
    kubectl_ok(&c, &["apply", "-f", "-"], Some(&old_vm(STRAY, "gone-desk")));
    eventually(Duration::from_secs(30), "the old VMI Running", || async {
        (jsonpath(&c, VM_NS, &format!("vmi/{ID}"), "{.status.phase}") == "Running").then_some(())
    })
    .await;
    let desk = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: {ID}, namespace: {DESK_NS}, finalizers: [{KOPF_FINALIZER}]}}\nspec: {{timeoutMs: 3600000}}\n"
    );
    kubectl_ok(&c, &["create", "-f", "-"], Some(&desk));
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(10);
    let expiry_at = expiry::expiry(start, 3_600_000);
    let block = serde_json::json!({"status": {"cyberdesk_create": {
        "virtualMachineRef": ID, "startTime": time::format(start),
        "expiryTime": time::format(expiry_at), "lastPhase": "Running"}}});
    kubectl_ok(
        &c,
        &[
            "patch",
            "cyberdesk",
            ID,
            "-n",
            DESK_NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            &block.to_string(),
        ],
        None,
    );
    let old_uid = kubevirt.vms.get(ID).await.expect("vm").metadata.uid;
    let stray_before = kubevirt.vms.get(STRAY).await.expect("stray");

    // The plan, read-only.
    let refused = migrate(
        &c,
        &[
            "--vm-namespace=kubevirt",
            "--vm-name-prefix=",
            "--desk-namespaces=cyberdesk-system",
        ],
    );
    assert!(
        !refused.status.success(),
        "migrate without --dry-run must refuse"
    );
    let before = versions(&c);
    let out = migrate(
        &c,
        &[
            "--dry-run",
            "--vm-namespace=kubevirt",
            "--vm-name-prefix=",
            "--desk-namespaces=cyberdesk-system",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expiry_text = time::format(expiry_at);
    assert!(
        text.contains(&format!(
            "adopt     {DESK_NS}/{ID}: VirtualMachine {VM_NS}/{ID} taken over, expiry {expiry_text} kept; finalizer {KOPF_FINALIZER} -> {}",
            names::FINALIZER
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("no desk   VirtualMachine {VM_NS}/{STRAY}")),
        "{text}"
    );
    assert!(text.contains("dry run: nothing was changed"), "{text}");
    assert_eq!(versions(&c), before, "the dry run changed something");

    // The operator starts and takes over.
    flags.extend([
        "--manage-webhook-config=false".into(),
        "--policy-dir=/nonexistent".into(),
        "--leader-election=false".into(),
        "--extra-san=127.0.0.1".into(),
    ]);
    let op = OperatorProcess::start_on(&c, "adopter", free_addr(), &flags);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    let adopted = desks
        .wait_phase(ID, "Running", Duration::from_secs(30))
        .await;
    assert_eq!(
        adopted.metadata.finalizers.clone().unwrap_or_default(),
        [names::FINALIZER],
        "kopf's finalizer not swapped"
    );
    let status = adopted.status.clone().expect("status");
    assert_eq!(
        epoch_ms(status.expiry_time.as_deref().expect("expiryTime")),
        epoch_ms(&time::format(expiry_at)),
        "the expiry moved"
    );
    // Still exactly one VM for the desk: the same one, now labelled as this operator's.
    let selector = format!("{}={ID}", names::LABEL_INSTANCE);
    let listed = kubevirt
        .vms
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1);
    let vm = &listed.items[0];
    assert_eq!(vm.metadata.name.as_deref(), Some(ID));
    assert_eq!(vm.metadata.uid, old_uid, "a second VM was made");
    let labels = vm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(names::LABEL_MANAGED_BY).map(String::as_str),
        Some(names::MANAGED_BY_VALUE)
    );
    assert_eq!(
        labels.get(names::LABEL_DESK_UID),
        adopted.metadata.uid.as_ref()
    );
    assert!(
        events_about(&c, DESK_NS, ID)
            .iter()
            .any(|e| e.reason == "VirtualMachineAdopted"),
        "no VirtualMachineAdopted event"
    );
    // The VM of no desk is not the operator's: untouched.
    let stray_after = kubevirt.vms.get(STRAY).await.expect("stray kept");
    assert_eq!(stray_after.metadata.uid, stray_before.metadata.uid);
    assert_eq!(stray_after.metadata.labels, stray_before.metadata.labels);

    // Deleting the desk now cleans up like any other: this operator deletes the VM (no
    // garbage collector runs here) and drops its finalizer, and says so.
    kubectl_ok(
        &c,
        &["delete", "cyberdesk", ID, "-n", DESK_NS, "--wait=false"],
        None,
    );
    eventually(Duration::from_secs(30), "desk, VM and VMI gone", || async {
        let gone = desks.desks.get_opt(ID).await.ok()?.is_none()
            && kubevirt.vms.get_opt(ID).await.ok()?.is_none()
            && kubevirt.vmis.get_opt(ID).await.ok()?.is_none();
        gone.then_some(())
    })
    .await;
    let cleaned = wait_event(&c, DESK_NS, ID, "CleanedUp", Duration::from_secs(10)).await;
    assert_eq!(cleaned.type_, "Normal", "{cleaned:?}");
    assert_eq!(
        op.metric("cyberdesk_vm_deleted_total"),
        Some(1.0),
        "the operator did not delete the adopted VM itself"
    );
}
