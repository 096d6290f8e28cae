//! Policies judge every change a user makes, not only spec changes: a label a policy
//! requires cannot be removed after CREATE. The operator's own bookkeeping (finalizer,
//! status) is never blocked. Pools are judged by the same policies. Its own binary: it
//! owns the policy ConfigMap, to which each test adds its own keys.

use std::time::Duration;

use cyberdesk_integration::cluster::namespace;
use cyberdesk_integration::desks::{desk_yaml, wait_webhooks_active};
use cyberdesk_integration::kubectl::Kubectl;
use cyberdesk_integration::operator::webhook_operator;
use cyberdesk_integration::wait::eventually;
use serde_json::json;

/// Adds `policy` under `key` to the policy ConfigMap, leaving the other tests' keys alone.
fn add_policy(admin: &Kubectl, key: &str, policy: &serde_json::Value) {
    let created = admin
        .run(
            &[
                "create",
                "configmap",
                "cyberdesk-policies",
                "-n",
                "cyberdesk-system",
            ],
            None,
        )
        .expect("kubectl");
    assert!(
        created.success || created.stderr.contains("already exists"),
        "{}",
        created.stderr
    );
    let patch = json!({"data": {key: policy.to_string()}}).to_string();
    let out = admin
        .run(
            &[
                "patch",
                "configmap",
                "cyberdesk-policies",
                "-n",
                "cyberdesk-system",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
}

fn pool_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: CyberdeskPool\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_on_templates_and_lifetimes_binds_pools() {
    let (c, _op) = webhook_operator(&[]).await;
    let client = c.client().await;
    let ns = namespace(&client, "pool-policy").await;
    let other = namespace(&client, "pool-policy-free").await;
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    // A template every namespace may use, and a policy that forbids it in `ns` alone.
    let tpl = format!("gpu-{ns}");
    let out = admin
        .apply(
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {tpl}\n  namespace: cyberdesk-system\n  labels: {{cyberdesk.io/template: \"true\"}}\ndata:\n  template.yaml: |\n    apiVersion: kubevirt.io/v1\n    kind: VirtualMachine\n    spec: {{template: {{spec: {{domain: {{devices: {{}}}}}}}}}}\n"
            ),
            &[],
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let templates = json!({"name": "no-gpu", "match": {"namespaces": [ns]}, "enforcement": "deny",
        "schema": {"properties": {"spec": {"properties": {"template": {"not": {"const": tpl}}}}}}});
    add_policy(&admin, "no-gpu.json", &templates);
    let gpu_pool = |ns: &str| pool_yaml(ns, "gpu", &format!("{{size: 0, template: {tpl}}}"));
    let denied = eventually(Duration::from_secs(20), "the policy in force", || async {
        let out = admin.apply(&gpu_pool(&ns), &["--dry-run=server"]).ok()?;
        (!out.success && out.stderr.contains("no-gpu")).then_some(out.stderr)
    })
    .await;
    assert!(
        denied.contains("spec.template") && denied.contains("cyberdeskpools"),
        "{denied}"
    );
    // The template itself is fine: where the policy does not match, the pool is admitted.
    let free = admin
        .apply(&gpu_pool(&other), &["--dry-run=server"])
        .expect("kubectl");
    assert!(free.success, "{}", free.stderr);
    let stored = admin.apply(&gpu_pool(&ns), &[]).expect("kubectl");
    assert!(!stored.success, "the pool was stored");

    // A ceiling on desks' timeoutMs caps how long an unclaimed pool VM lives.
    let ceiling = json!({"name": "one-hour", "match": {"namespaces": [ns]}, "enforcement": "deny",
        "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": 3_600_000}}}}}});
    add_policy(&admin, "one-hour.json", &ceiling);
    let idle = eventually(Duration::from_secs(20), "the ceiling in force", || async {
        let out = admin
            .apply(&pool_yaml(&ns, "idle", "{size: 0}"), &["--dry-run=server"])
            .ok()?;
        (!out.success && out.stderr.contains("one-hour")).then_some(out.stderr)
    })
    .await;
    assert!(idle.contains("spec.maxIdleMs"), "{idle}");
    let short = admin
        .apply(
            &pool_yaml(&ns, "idle", "{size: 0, maxIdleMs: 1800000}"),
            &[],
        )
        .expect("kubectl");
    assert!(short.success, "{}", short.stderr);
}

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
    add_policy(&admin, "team-label.json", &policy);
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

/// A desk admitted before a stricter policy breaks it from then on: a user's change to it
/// is judged and denied, but bookkeeping is not: the finalizer taken off comes back (the
/// operator's own update) and deletion completes (the operator takes it off again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_admitted_before_a_stricter_policy_keeps_its_bookkeeping() {
    let (c, _op) = webhook_operator(&[]).await;
    let client = c.client().await;
    let ns = namespace(&client, "tightened").await;
    wait_webhooks_active(&c, &ns).await;
    let admin = c.kubectl();
    let out = admin
        .apply(&desk_yaml(&ns, "early", "{}"), &[])
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let jsonpath = |path: &str| {
        admin
            .run(
                &[
                    "get",
                    "cd",
                    "early",
                    "-n",
                    &ns,
                    "-o",
                    &format!("jsonpath={path}"),
                ],
                None,
            )
            .expect("kubectl")
            .ok()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    eventually(Duration::from_secs(20), "the desk reconciled", || async {
        (!jsonpath("{.status.virtualMachineRef}").is_empty()).then_some(())
    })
    .await;

    // Tightened: every desk in the namespace now needs a tier label, which early lacks.
    let policy = json!({"name": "tier-label", "match": {"namespaces": [ns]}, "enforcement": "deny",
        "schema": {"properties": {"metadata": {"required": ["labels"],
            "properties": {"labels": {"required": ["tier"]}}}}}});
    add_policy(&admin, "tier-label.json", &policy);
    let probe = desk_yaml(&ns, "probe", "{}");
    eventually(Duration::from_secs(20), "the policy in force", || async {
        let out = admin.apply(&probe, &["--dry-run=server"]).ok()?;
        (!out.success && out.stderr.contains("tier-label")).then_some(())
    })
    .await;
    let relabel = admin
        .run(&["label", "cd", "early", "-n", &ns, "owner=bob"], None)
        .expect("kubectl");
    assert!(!relabel.success, "a user's change to early was admitted");
    assert!(relabel.stderr.contains("tier-label"), "{}", relabel.stderr);

    // The finalizer taken off (bookkeeping, admitted) is put back by the operator.
    let unfinalized = admin
        .run(
            &[
                "patch",
                "cd",
                "early",
                "-n",
                &ns,
                "--type=json",
                "-p",
                r#"[{"op": "remove", "path": "/metadata/finalizers"}]"#,
            ],
            None,
        )
        .expect("kubectl");
    assert!(unfinalized.success, "{}", unfinalized.stderr);
    eventually(
        Duration::from_secs(20),
        "the operator's finalizer back on early",
        || async {
            (jsonpath("{.metadata.finalizers}").contains("cyberdesk.io/vm-cleanup")).then_some(())
        },
    )
    .await;

    // Deletion completes: the operator deletes the VM and takes its finalizer off.
    let deleted = admin
        .run(&["delete", "cd", "early", "-n", &ns, "--timeout=30s"], None)
        .expect("kubectl");
    assert!(deleted.success, "{}", deleted.stderr);
    let gone = admin
        .run(&["get", "cd", "early", "-n", &ns], None)
        .expect("kubectl");
    assert!(gone.stderr.contains("NotFound"), "{gone:?}");
}
