//! The template rule holds without the webhooks: an admin who switches them off (or an
//! outage with failurePolicy Ignore) must not open templates to every namespace. No webhook
//! is registered in this binary; the reconciler alone judges each desk. (The Secret rule
//! needs the requester's identity, which only admission sees.)

use std::time::Duration;

use cyberdesk_integration::cluster::{cluster, namespace};
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
