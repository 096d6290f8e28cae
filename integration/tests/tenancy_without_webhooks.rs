//! The template rule holds without the webhooks: an admin who switches them off (or an
//! outage with failurePolicy Ignore) must not open templates to every namespace. No webhook
//! is registered in this binary; the reconciler alone judges each desk. (The Secret rule
//! needs the requester's identity, which only admission sees.) The CRD's own rules hold
//! too: the timeout range, the name that must fit the VM name, and template and user data
//! that cannot change once set.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster, install_apis, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{ready_operator, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::model::conditions::{self, ConditionStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_refuses_a_template_not_allowed_in_the_namespace() {
    let c = cluster();
    let _operator = ready_operator(&c, "no-webhooks", &reconciler_only_flags(false)).await;
    let client = c.client().await;
    let team_a = namespace(&client, "team-a").await;
    let team_b = namespace(&client, "team-b").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::default());
    let admin = c.kubectl();
    let tpl = format!("only-{team_a}");
    let configmap = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {tpl}\n  namespace: cyberdesk-system\n  labels: {{cyberdesk.io/template: \"true\"}}\n  annotations: {{cyberdesk.io/allowed-namespaces: \"{team_a}\"}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec: {{template: {{spec: {{domain: {{devices: {{}}}}}}}}}}\n"
    );
    let out = admin.apply(&configmap, &[]).expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    for ns in [&team_a, &team_b] {
        let out = admin
            .apply(&desk_yaml(ns, "gpu", &format!("{{template: {tpl}}}")), &[])
            .expect("kubectl");
        assert!(out.success, "no webhook should judge this: {}", out.stderr);
    }

    let refused = Apis::new(&client, &team_b);
    // Until the operator's watch has the new ConfigMap the desk may first be told "not
    // found"; wait for the verdict on the template itself.
    let cond = refused
        .wait_condition(
            "gpu",
            conditions::TEMPLATE_VALID,
            "TemplateNotAllowed",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(refused.phase("gpu").await.as_deref(), Some("Failed"));
    assert_eq!(cond.status, ConditionStatus::False);
    assert_eq!(cond.reason, "TemplateNotAllowed");
    assert!(cond.message.contains(&team_b), "{}", cond.message);
    assert!(
        refused
            .vms
            .get_opt("cyberdesk-gpu")
            .await
            .expect("get")
            .is_none(),
        "VM made anyway"
    );
    eventually(
        Duration::from_secs(10),
        "a TemplateNotAllowed Warning event",
        || async {
            let out = admin
                .run(
                    &[
                        "get",
                        "events",
                        "-n",
                        &team_b,
                        "--field-selector",
                        "reason=TemplateNotAllowed",
                        "-o",
                        "json",
                    ],
                    None,
                )
                .ok()?;
            out.stdout.contains("\"Warning\"").then_some(())
        },
    )
    .await;

    // The namespace it allows gets its VM.
    Apis::new(&client, &team_a)
        .wait_phase("gpu", "Running", Duration::from_secs(30))
        .await;
}

fn apply(c: &Cluster, yaml: &str) -> (bool, String) {
    let out = c.kubectl().apply(yaml, &[]).expect("kubectl");
    (out.success, format!("{}{}", out.stderr, out.stdout))
}

/// The apiserver refuses `yaml`, with a message containing `says`.
fn refused(c: &Cluster, yaml: &str, says: &str) {
    let (ok, text) = apply(c, yaml);
    assert!(!ok, "admitted: {yaml}");
    assert!(text.contains(says), "{says:?} not in: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhooks_the_crd_still_refuses_bad_desks() {
    let c = cluster();
    install_apis(&c).await;
    // No webhook configuration exists in this control plane.
    let hooks = c
        .kubectl()
        .run(
            &[
                "get",
                "mutatingwebhookconfigurations,validatingwebhookconfigurations",
                "-o",
                "name",
            ],
            None,
        )
        .expect("kubectl");
    assert!(hooks.stdout.trim().is_empty(), "{}", hooks.stdout);
    let ns = namespace(&c.client().await, "crd-rules").await;

    refused(
        &c,
        &desk_yaml(&ns, "short", "{timeoutMs: 10}"),
        "spec.timeoutMs",
    );
    // The answer names the field (`metadata.name: Invalid value: ...`), not `<nil>`.
    let (ok, text) = apply(&c, &desk_yaml(&ns, &"a".repeat(60), "{timeoutMs: 60000}"));
    assert!(!ok, "a 60-character name was admitted");
    assert!(
        text.contains("metadata.name: Invalid value") && !text.contains("<nil>"),
        "{text}"
    );
    let pool = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: CyberdeskPool\nmetadata: {{name: {}, namespace: {ns}}}\nspec: {{size: 1}}\n",
        "p".repeat(43)
    );
    let (ok, text) = apply(&c, &pool);
    assert!(!ok, "a 43-character pool name was admitted");
    assert!(
        text.contains("metadata.name: Invalid value") && !text.contains("<nil>"),
        "{text}"
    );
    let (ok, text) = apply(&c, &desk_yaml(&ns, &"a".repeat(53), "{timeoutMs: 60000}"));
    assert!(ok, "{text}");

    let first =
        "{timeoutMs: 60000, template: tmpl-a, userDataSecretRef: {name: s1, key: userdata}}";
    let (ok, text) = apply(&c, &desk_yaml(&ns, "fixed", first));
    assert!(ok, "{text}");
    refused(
        &c,
        &desk_yaml(
            &ns,
            "fixed",
            "{timeoutMs: 60000, template: tmpl-b, userDataSecretRef: {name: s1, key: userdata}}",
        ),
        "spec.template is immutable once set",
    );
    refused(
        &c,
        &desk_yaml(
            &ns,
            "fixed",
            "{timeoutMs: 60000, userDataSecretRef: {name: s1, key: userdata}}",
        ),
        "spec.template is immutable once set",
    );
    refused(
        &c,
        &desk_yaml(
            &ns,
            "fixed",
            "{timeoutMs: 60000, template: tmpl-a, userDataSecretRef: {name: s2, key: userdata}}",
        ),
        "spec.userDataSecretRef is immutable once set",
    );
    // What may change still does: the timeout.
    let (ok, text) = apply(
        &c,
        &desk_yaml(
            &ns,
            "fixed",
            "{timeoutMs: 120000, template: tmpl-a, userDataSecretRef: {name: s1, key: userdata}}",
        ),
    );
    assert!(ok, "{text}");
    // A desk without a template may get one.
    let (ok, text) = apply(&c, &desk_yaml(&ns, "open", "{timeoutMs: 60000}"));
    assert!(ok, "{text}");
    let (ok, text) = apply(
        &c,
        &desk_yaml(&ns, "open", "{timeoutMs: 60000, template: tmpl-a}"),
    );
    assert!(ok, "{text}");
}
