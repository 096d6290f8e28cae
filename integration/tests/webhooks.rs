//! The admission webhooks end to end: the real apiserver calls the operator over TLS (the
//! webhook registered by URL with the operator's self-managed CA), and tests use kubectl as
//! a user would.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, namespace};
use cyberdesk_integration::desks::{desk_yaml, now_ms, wait_event, wait_webhooks_active};
use cyberdesk_integration::operator::{Scrape, SharedOperator, webhook_operator};
use cyberdesk_integration::wait::holds;
use cyberdesk_integration::webhook_tls::served_leaf;
use cyberdesk_operator::certs::tls::CertInfo;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use serde_json::json;

/// Control plane + CRDs + one operator per test binary; certificates checked every second
/// so the rotation test does not wait a minute.
async fn setup() -> (Cluster, SharedOperator) {
    webhook_operator(&["--cert-check-interval-secs=1"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_without_timeout_stores_the_default_and_the_finalizer() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "defaults").await;
    wait_webhooks_active(&c, &ns).await;
    // The create's own response is the object as admission left it, before the reconciler
    // (which also adds the finalizer) can have seen it.
    let out = c
        .kubectl()
        .run(
            &["create", "-o", "json", "-f", "-"],
            Some(&desk_yaml(&ns, "alice", "{}")),
        )
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["spec"]["timeoutMs"], 3_600_000);
    assert_eq!(v["spec"]["timeoutAction"], "Delete");
    assert_eq!(
        v["metadata"]["finalizers"],
        json!(["cyberdesk.io/vm-cleanup"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_specs_name_every_field_and_dry_run_agrees() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "invalid").await;
    wait_webhooks_active(&c, &ns).await;
    // Passes the CRD's schema and rules (a name too long for the VM is the CRD's to
    // refuse: tenancy_without_webhooks.rs); only the webhook can see what is wrong with it.
    let bad = desk_yaml(
        &ns,
        "bad-spec",
        "{timeoutMs: 2700000000, userDataSecretRef: {name: s, key: 'bad key'}}",
    );
    for extra in [&[][..], &["--dry-run=server"][..]] {
        let out = c.kubectl().apply(&bad, extra).expect("kubectl");
        assert!(!out.success, "accepted with {extra:?}");
        for field in ["spec.timeoutMs", "spec.userDataSecretRef.key"] {
            assert!(
                out.stderr.contains(field),
                "{field} missing with {extra:?}: {}",
                out.stderr
            );
        }
    }
    let listed = c
        .kubectl()
        .run(&["get", "cd", "-n", &ns, "-o", "name"], None)
        .expect("kubectl");
    assert_eq!(listed.stdout.trim(), "", "a rejected object was stored");

    // A good desk under --dry-run=server is admitted (and defaulted) but not stored.
    let out = c
        .kubectl()
        .apply(
            &desk_yaml(&ns, "ok", "{}"),
            &["--dry-run=server", "-o", "json"],
        )
        .expect("kubectl");
    assert!(
        out.success && out.stdout.contains("3600000"),
        "{}",
        out.stderr
    );
    let listed = c
        .kubectl()
        .run(&["get", "cd", "-n", &ns, "-o", "name"], None)
        .expect("kubectl");
    assert_eq!(listed.stdout.trim(), "");
}

fn policy_configmap(ns: &str, policy: serde_json::Value) -> String {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cyberdesk-policies", "namespace": "cyberdesk-system"},
        "data": {"scoped.json": policy.to_string(), "note.txt": format!("scoped to {ns}")}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_configmap_changes_verdicts_without_a_restart() {
    let (c, op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "policy").await;
    wait_webhooks_active(&c, &ns).await;
    let two_hours = desk_yaml(&ns, "long", "{timeoutMs: 7200000}");
    assert!(
        c.kubectl()
            .apply(&two_hours, &["--dry-run=server"])
            .expect("kubectl")
            .success
    );

    let max_1h = json!({"name": "max-1h", "match": {"namespaces": [ns]}, "enforcement": "deny",
        "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": 3600000}}}}}});
    let applied = c
        .kubectl()
        .apply(&policy_configmap(&ns, max_1h), &[])
        .expect("kubectl")
        .ok();
    assert!(applied.is_ok(), "{applied:?}");
    let denied = || {
        let out = c
            .kubectl()
            .apply(&two_hours, &["--dry-run=server"])
            .expect("kubectl");
        !out.success && out.stderr.contains("max-1h") && out.stderr.contains("spec.timeoutMs")
    };
    assert!(
        holds(Duration::from_secs(20), denied).await,
        "the new policy never took effect"
    );

    // A policy that does not compile is refused; the previous set stays in force.
    let errors_before = reload_errors(op.metrics());
    let broken = json!({"name": "broken", "schema": {"type": "no-such-type"}});
    c.kubectl()
        .apply(&policy_configmap(&ns, broken), &[])
        .expect("kubectl")
        .ok()
        .expect("apply");
    assert!(
        holds(Duration::from_secs(20), || reload_errors(op.metrics())
            > errors_before)
        .await,
        "the broken policy was not reported"
    );
    assert!(denied(), "the last good policy set was dropped");
    assert!(
        op.log().contains("broken"),
        "the log does not name the broken policy"
    );
    // One event about the ConfigMap carries the reason, the Warning type and the name.
    let event = wait_event(
        &c,
        "cyberdesk-system",
        "cyberdesk-policies",
        "PolicyRejected",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(event.type_, "Warning", "{event:?}");
    assert!(event.note.contains("broken"), "{event:?}");

    // Removing the policy lifts the restriction.
    c.kubectl()
        .run(
            &[
                "delete",
                "configmap",
                "cyberdesk-policies",
                "-n",
                "cyberdesk-system",
            ],
            None,
        )
        .expect("kubectl");
    let allowed = || {
        c.kubectl()
            .apply(&two_hours, &["--dry-run=server"])
            .is_ok_and(|o| o.success)
    };
    assert!(
        holds(Duration::from_secs(20), allowed).await,
        "deleting the policy did not lift it"
    );
}

fn reload_errors(metrics: String) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(r#"cyberdesk_policy_reload_total{result="error"}"#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The webhook Secret's `tls.crt` leaf (DER) and `ca.crt` (PEM).
async fn stored_pair(secrets: &Api<Secret>) -> (Option<Vec<u8>>, String) {
    let s = secrets
        .get("cyberdesk-webhook-tls")
        .await
        .expect("tls secret");
    let data = s.data.unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let leaf = cyberdesk_operator::certs::tls::certs_from_pem(&text("tls.crt"))
        .ok()
        .and_then(|certs| certs.first().map(|c| c.to_vec()));
    (leaf, text("ca.crt"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_certificate_rotation_loses_no_admission() {
    let (c, op) = setup().await;
    let client = c.client().await;
    let ns = namespace(&client, "rotate").await;
    wait_webhooks_active(&c, &ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cyberdesk-system");
    let (stored_before, ca) = stored_pair(&secrets).await;
    let stored_before = stored_before.expect("a leaf in tls.crt");
    let served_before = served_leaf(&ca, op.webhook).await.expect("served leaf");
    assert_eq!(served_before, stored_before, "serves what the Secret holds");

    // Spoil the leaf in the Secret: the operator must issue a new one from the same CA at
    // its next check and serve it, while admissions keep succeeding.
    use base64::Engine;
    let garbage = "not a certificate";
    let patch = json!([{"op": "replace", "path": "/data/tls.crt",
        "value": base64::engine::general_purpose::STANDARD.encode(garbage)}]);
    let mut failures = Vec::new();
    let mut served_new = None;
    for i in 0..60 {
        if i == 5 {
            let out = c
                .kubectl()
                .run(
                    &[
                        "patch",
                        "secret",
                        "cyberdesk-webhook-tls",
                        "-n",
                        "cyberdesk-system",
                        "--type=json",
                        "-p",
                        &patch.to_string(),
                    ],
                    None,
                )
                .expect("kubectl");
            assert!(out.success, "{}", out.stderr);
        }
        let out = c
            .kubectl()
            .apply(
                &desk_yaml(&ns, &format!("d{i}"), "{}"),
                &["--dry-run=server"],
            )
            .expect("kubectl");
        if !out.success {
            failures.push(out.stderr);
        }
        if i > 5 && served_new.is_none() {
            let served = served_leaf(&ca, op.webhook).await.expect("handshake");
            if served != served_before {
                served_new = Some(served);
            }
        }
        if served_new.is_some() && i > 25 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served_new = served_new.expect("the server never presented a new certificate");
    // Chained to the unchanged ca.crt (the handshake checked it); read it as a certificate:
    // issued after the one it replaces, valid now, for the address the apiserver calls.
    let old = CertInfo::from_der(&served_before).expect("the first leaf parses");
    let new = CertInfo::from_der(&served_new).expect("the served leaf is not a certificate");
    let now = now_ms() / 1000;
    assert!(
        new.not_before >= old.not_before && new.not_before <= now && now < new.not_after,
        "the served leaf is not a fresh, valid one: {new:?} (replaced {old:?}, now {now})"
    );
    assert!(new.covers("127.0.0.1"), "{new:?}");
    let (stored_after, ca_after) = stored_pair(&secrets).await;
    assert_eq!(ca_after, ca, "the CA changed; only the leaf should");
    assert_eq!(
        stored_after.as_ref(),
        Some(&served_new),
        "serves a leaf the Secret does not hold"
    );
    assert!(
        failures.is_empty(),
        "{} admissions failed during rotation: {:?}",
        failures.len(),
        failures.first()
    );
}
