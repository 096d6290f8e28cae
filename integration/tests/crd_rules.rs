//! The CRD's own rules, which the apiserver holds with no webhook registered at all (an
//! operator outage with `failurePolicy: Ignore`, or the configurations deleted): the
//! timeout range, the name that must fit the VM name, and template and user data that
//! cannot change once set.

use cyberdesk_integration::cluster::{Cluster, cluster, install_apis, namespace};
use cyberdesk_integration::desks::desk_yaml;

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
    refused(
        &c,
        &desk_yaml(&ns, &"a".repeat(60), "{timeoutMs: 60000}"),
        "metadata.name",
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
