//! Policies judge every change a user makes, not only spec changes: a label a policy
//! requires cannot be removed after CREATE. The operator's own bookkeeping (finalizer,
//! status) is never blocked. Its own binary: it owns the policy ConfigMap.

use std::time::Duration;

use cyberdesk_integration::cluster::namespace;
use cyberdesk_integration::desks::{desk_yaml, wait_webhooks_active};
use cyberdesk_integration::operator::webhook_operator;
use cyberdesk_integration::wait::eventually;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_required_label_is_denied_and_deletion_still_completes() {
    let (c, _op) = webhook_operator(&[]).await;
    let client = c.client().await;
    let ns = namespace(&client, "labels").await;
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    let policy = json!({"name": "team-label", "match": {"namespaces": [ns]}, "enforcement": "deny",
        "schema": {"properties": {"metadata": {"required": ["labels"],
            "properties": {"labels": {"required": ["team"]}}}}}});
    let configmap = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cyberdesk-policies", "namespace": "cyberdesk-system"},
        "data": {"team-label.json": policy.to_string()}
    });
    let out = admin.apply(&configmap.to_string(), &[]).expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let unlabelled = desk_yaml(&ns, "probe", "{}");
    eventually(Duration::from_secs(20), "the policy in force", || async {
        let out = admin.apply(&unlabelled, &["--dry-run=server"]).ok()?;
        (!out.success && out.stderr.contains("team-label")).then_some(())
    })
    .await;

    let labelled = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: desk, namespace: {ns}, labels: {{team: a}}}}\nspec: {{}}\n"
    );
    let out = admin.apply(&labelled, &[]).expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    // The operator adds its finalizer and writes status meanwhile: never blocked.
    eventually(Duration::from_secs(20), "the desk reconciled", || async {
        let out = admin
            .run(
                &[
                    "get",
                    "cd",
                    "desk",
                    "-n",
                    &ns,
                    "-o",
                    "jsonpath={.status.virtualMachineRef}",
                ],
                None,
            )
            .ok()?;
        (!out.stdout.is_empty()).then_some(())
    })
    .await;

    let removed = admin
        .run(&["label", "cd", "desk", "-n", &ns, "team-"], None)
        .expect("kubectl");
    assert!(!removed.success, "removing the required label was admitted");
    assert!(removed.stderr.contains("team-label"), "{}", removed.stderr);
    let still = admin
        .run(
            &[
                "get",
                "cd",
                "desk",
                "-n",
                &ns,
                "-o",
                "jsonpath={.metadata.labels.team}",
            ],
            None,
        )
        .expect("kubectl");
    assert_eq!(still.stdout, "a");
    // Another label may still change: only what a policy forbids is refused.
    let relabelled = admin
        .run(&["label", "cd", "desk", "-n", &ns, "owner=bob"], None)
        .expect("kubectl");
    assert!(relabelled.success, "{}", relabelled.stderr);

    // Deletion: the operator removes its finalizer (an UPDATE the policy would not pass if
    // it applied to the operator's bookkeeping) and the desk goes away.
    let deleted = admin
        .run(&["delete", "cd", "desk", "-n", &ns, "--timeout=30s"], None)
        .expect("kubectl");
    assert!(deleted.success, "{}", deleted.stderr);
    let gone = admin
        .run(&["get", "cd", "desk", "-n", &ns], None)
        .expect("kubectl");
    assert!(gone.stderr.contains("NotFound"), "{gone:?}");
}
