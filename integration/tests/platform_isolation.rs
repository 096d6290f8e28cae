//! No desk reaches across namespaces under the platform overlay (`--vm-namespace=kubevirt`,
//! `--vm-name-prefix=`, `--desk-namespaces=cyberdesk-system`): a user who may create desks
//! in every namespace names one after a VM in kubevirt that is not theirs, with a Secret
//! reference (whose render fails on purpose) or kopf's finalizer, or after another desk's
//! name. With the webhooks the desk is denied, naming the flag; with the webhooks gone the
//! reconciler only says why the desk cannot run. Either way no VM changes hands, nothing
//! of the other VM shows in the desk's status, and the platform hears nothing about it.

use std::collections::BTreeMap;
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml, wait_webhooks_active};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::overlay;
use cyberdesk_integration::recorder::Recorder;
use cyberdesk_integration::wait::{eventually, throughout};
use cyberdesk_operator::controller::desk::adoption::KOPF_FINALIZER;
use cyberdesk_operator::model::conditions::{self, VM_CREATED};
use cyberdesk_operator::model::{Cyberdesk, VirtualMachine, names};

const DESK_NS: &str = "cyberdesk-system";
const VM_NS: &str = "kubevirt";
const USER: &str = "mallory";

fn kubectl_ok(c: &Cluster, args: &[&str], stdin: Option<&str>) -> String {
    let out = c.kubectl().run(args, stdin).expect("kubectl");
    out.ok().unwrap_or_else(|e| panic!("kubectl {args:?}: {e}"))
}

/// A UUID-shaped name, as the gateway names desks.
fn id(n: u32) -> String {
    format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
}

/// A VM in kubevirt nobody owns: `labels` as the previous operator (or someone) left them.
fn foreign_vm(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: {name}, namespace: {VM_NS}, labels: {labels}}}\nspec:\n  runStrategy: Always\n  template:\n    spec: {{domain: {{devices: {{}}}}}}\n"
    )
}

/// What must not change about a VM that is not the attacker's.
#[derive(Debug, PartialEq)]
struct Held {
    uid: Option<String>,
    labels: BTreeMap<String, String>,
    owners: usize,
    run_strategy: Option<String>,
    deleting: bool,
}

fn held(vm: &VirtualMachine) -> Held {
    Held {
        uid: vm.metadata.uid.clone(),
        labels: vm.metadata.labels.clone().unwrap_or_default(),
        owners: vm.metadata.owner_references.as_ref().map_or(0, Vec::len),
        run_strategy: vm.run_strategy().map(str::to_string),
        deleting: vm.metadata.deletion_timestamp.is_some(),
    }
}

/// Nothing of a VM in the desk's status, and no legacy block that looks like kopf's.
fn shows_nothing(desk: &Cyberdesk) -> Result<(), String> {
    let Some(status) = desk.status.as_ref() else {
        return Ok(());
    };
    if status.ip_address.is_some() || status.virtual_machine_ref.is_some() {
        return Err(format!("the desk shows a VM: {status:?}"));
    }
    if let Some(block) = status.legacy.as_ref()
        && block.written_by.is_none()
    {
        return Err(format!("a legacy block like kopf's: {block:?}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_in_another_namespace_never_takes_or_shares_a_vm_in_kubevirt() {
    let c = cluster();
    let mut flags = overlay::install_platform(&c).await;
    assert!(
        flags.contains(&format!("--desk-namespaces={DESK_NS}")),
        "the overlay must serve desks from {DESK_NS} only: {flags:?}"
    );
    let client = c.client().await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(VM_NS));
    let platform = Recorder::start();
    flags.extend([
        "--leader-election=false".to_string(),
        "--policy-dir=/nonexistent".to_string(),
        format!(
            "--ready-url={}/cyberdesk/{{name}}/ready",
            platform.base_url()
        ),
        "--notify-timeout-secs=1".to_string(),
    ]);
    let env = [
        (
            "SUPABASE_URL".to_string(),
            format!("{}/supabase", platform.base_url()),
        ),
        ("SUPABASE_KEY".to_string(), "sb-test-key".to_string()),
    ];
    let webhook = cyberdesk_integration::operator::free_addr();
    cyberdesk_integration::operator::register_webhooks(&c, webhook).expect("webhooks");
    flags.push("--extra-san=127.0.0.1".to_string());
    let op = OperatorProcess::start_with_env(&c, "isolation", webhook, &flags, &env);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    wait_webhooks_active(&c, DESK_NS).await;

    // The user may create desks (and read Secrets) in every namespace.
    let team = namespace(&client, "team-x").await;
    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {USER}}}\n\
             rules: [{{apiGroups: [cyberdesk.io], resources: [cyberdesks], verbs: [get, list, watch, create, update, patch, delete]}},\n\
                     {{apiGroups: [''], resources: [secrets], verbs: [get]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: {USER}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {USER}}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {USER}}}]\n"
        )),
    );
    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: cloud-init, namespace: {team}}}\nstringData: {{userdata: \"#cloud-config\\n\"}}\n"
        )),
    );
    let mallory = c.kubectl().as_user(USER, &[]);

    // Two VMs in kubevirt that are not the user's: one without labels, one labelled as
    // the previous operator labelled its VMs (its desk long gone).
    let (bare, kopf_made, shared) = (id(1), id(2), id(3));
    kubectl_ok(&c, &["apply", "-f", "-"], Some(&foreign_vm(&bare, "{}")));
    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(&foreign_vm(
            &kopf_made,
            &format!("{{app: cyberdesk, cyberdesk-instance: {kopf_made}}}"),
        )),
    );
    // And a desk of the platform, Running with its VM in kubevirt.
    kubectl_ok(
        &c,
        &["apply", "-f", "-"],
        Some(&desk_yaml(DESK_NS, &shared, "{timeoutMs: 600000}")),
    );
    let desks = Apis::new(&client, DESK_NS);
    let team_desks = Apis::new(&client, &team);
    let kubevirt = Apis::new(&client, VM_NS);
    let owner = desks
        .wait_phase(&shared, "Running", Duration::from_secs(60))
        .await;
    let with_secret = "{timeoutMs: 5000, timeoutAction: Delete, userDataSecretRef: {name: cloud-init, key: userdata}}";

    // With the webhooks: denied, naming the flag and its set; nothing stored.
    for name in [&bare, &kopf_made, &shared] {
        let out = mallory
            .apply(&desk_yaml(&team, name, with_secret), &[])
            .expect("kubectl");
        assert!(!out.success, "the desk {name} in {team} was admitted");
        for part in [
            "metadata.namespace",
            "--desk-namespaces",
            DESK_NS,
            team.as_str(),
        ] {
            assert!(
                out.stderr.contains(part),
                "{part:?} missing: {}",
                out.stderr
            );
        }
        assert!(team_desks.desks.get_opt(name).await.expect("get").is_none());
    }

    // Without the webhooks the desks are stored; kopf's finalizer on one of them.
    for config in [
        "validatingwebhookconfiguration/cyberdesk-validating",
        "mutatingwebhookconfiguration/cyberdesk-mutating",
    ] {
        kubectl_ok(&c, &["delete", config], None);
    }
    eventually(Duration::from_secs(30), "the webhooks gone", || async {
        let probe = desk_yaml(&team, "probe", "{}");
        let out = mallory.apply(&probe, &["--dry-run=server"]).ok()?;
        out.success.then_some(())
    })
    .await;
    let victims: Vec<(String, VirtualMachine)> = {
        let mut v = Vec::new();
        for name in [&bare, &kopf_made, &shared] {
            v.push((name.clone(), kubevirt.vms.get(name).await.expect("vm")));
        }
        v
    };
    for name in [&bare, &shared] {
        let out = mallory
            .apply(&desk_yaml(&team, name, with_secret), &[])
            .expect("kubectl");
        assert!(out.success, "{}", out.stderr);
    }
    let forged = desk_yaml(&team, &kopf_made, with_secret).replace(
        "  namespace:",
        &format!("  finalizers: [{KOPF_FINALIZER}]\n  namespace:"),
    );
    let out = mallory.apply(&forged, &[]).expect("kubectl");
    assert!(out.success, "{}", out.stderr);

    // Each says why it cannot run.
    for name in [&bare, &kopf_made, &shared] {
        let desk = team_desks
            .wait_phase(name, "Failed", Duration::from_secs(30))
            .await;
        let status = desk.status.clone().expect("status");
        let created = conditions::find(&status.conditions, VM_CREATED).expect("condition");
        assert_eq!(created.reason, "NamespaceNotServed", "{status:?}");
        let message = status.message.as_deref().unwrap_or_default();
        assert!(
            message.contains("--desk-namespaces") && message.contains(DESK_NS),
            "{message}"
        );
        assert_eq!(
            desk.metadata.finalizers.clone().unwrap_or_default(),
            if *name == kopf_made {
                vec![KOPF_FINALIZER.to_string()]
            } else {
                vec![]
            },
            "the operator took the desk on"
        );
    }

    // For 30 s (past the desks' 5 s timeout): no VM changes, nothing shows in the desks.
    throughout(Duration::from_secs(30), || async {
        for (name, before) in &victims {
            let now = kubevirt.vms.get(name).await.expect("vm still there");
            assert_eq!(
                held(&now),
                held(before),
                "VirtualMachine {VM_NS}/{name} changed"
            );
            let desk = team_desks.desks.get(name).await.expect("desk");
            if let Err(e) = shows_nothing(&desk) {
                panic!("{team}/{name}: {e}");
            }
        }
    })
    .await;
    // The platform's desk still has its own VM, the only one of that name.
    let vm = kubevirt.vms.get(&shared).await.expect("vm");
    let labels = vm.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(names::LABEL_DESK_UID),
        owner.metadata.uid.as_ref()
    );
    assert_eq!(
        labels.get(names::LABEL_DESK_NAMESPACE).map(String::as_str),
        Some(DESK_NS)
    );
    assert!(
        desks
            .desks
            .get(&shared)
            .await
            .is_ok_and(|d| d.metadata.uid == owner.metadata.uid)
    );

    // Deleting the user's desks leaves every VM as it was.
    kubectl_ok(
        &c,
        &[
            "patch",
            "cyberdesk",
            &kopf_made,
            "-n",
            &team,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    for name in [&bare, &kopf_made, &shared] {
        let out = mallory
            .run(
                &["delete", "cyberdesk", name, "-n", &team, "--wait=true"],
                None,
            )
            .expect("kubectl");
        assert!(out.success, "{}", out.stderr);
    }
    throughout(Duration::from_secs(5), || async {
        for (name, before) in &victims {
            let now = kubevirt.vms.get(name).await.expect("vm still there");
            assert_eq!(
                held(&now),
                held(before),
                "VirtualMachine {VM_NS}/{name} changed"
            );
        }
    })
    .await;
    assert!(
        desks
            .wait_phase(&shared, "Running", Duration::from_secs(5))
            .await
            .status
            .is_some()
    );

    // The platform heard about its own desk only: pending and ready, never the `error`
    // the other namespace's desk of that name would have written over its row.
    let heard: Vec<(String, String)> = platform
        .requests()
        .into_iter()
        .map(|r| (r.target, r.body))
        .collect();
    for name in [&bare, &kopf_made] {
        assert!(
            !heard.iter().any(|(t, _)| t.contains(name.as_str())),
            "the platform heard about {name}: {heard:?}"
        );
    }
    let about_shared: Vec<&(String, String)> = heard
        .iter()
        .filter(|(t, _)| t.contains(shared.as_str()))
        .collect();
    assert!(
        about_shared.iter().any(|(t, _)| t.ends_with("/ready")),
        "the platform's own desk was never reported ready: {heard:?}"
    );
    assert!(
        about_shared.iter().all(|(_, body)| !body.contains("error")),
        "the other desk of that name wrote the platform's row: {heard:?}"
    );
}
