//! The trust anchor is outside the webhook Secret: a CA appended to `ca.crt` together with
//! its fingerprint in the annotation earlier builds trusted, and a consistent rewrite of CA,
//! key and leaf, never reach the webhooks' caBundle, and both are removed with an event. Its
//! own binary: it edits the Secret the shared operator serves from.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, namespace};
use cyberdesk_integration::controlplane::TestCa;
use cyberdesk_integration::desks::{desk_yaml, wait_webhooks_active};
use cyberdesk_integration::operator::webhook_operator;
use cyberdesk_integration::wait::{eventually, throughout};
use cyberdesk_integration::webhook_tls::{published_bundles, rewrite_secret, secret_ca};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// SHA-256 of the certificate in `pem`, as earlier builds recorded it.
fn fingerprint(pem: &str) -> String {
    let all = cyberdesk_operator::certs::trust::fingerprints(pem);
    assert_eq!(all.len(), 1, "one certificate expected");
    all.into_iter().next().unwrap_or_default()
}

/// Never, for `secs`, does either caBundle hold `pem`.
async fn never_published(c: &Cluster, pem: &str, secs: u64, what: &str) {
    throughout(Duration::from_secs(secs), || async {
        for bundle in published_bundles(c).await {
            assert!(!bundle.contains(pem.trim()), "{what} reached a caBundle");
        }
    })
    .await;
}

/// UntrustedCaRemoved events whose note names `fingerprint`.
fn untrusted_events(c: &Cluster, fingerprint: &str) -> usize {
    let out = c
        .kubectl()
        .run(
            &[
                "get",
                "events",
                "-n",
                "cyberdesk-system",
                "--field-selector",
                "reason=UntrustedCaRemoved",
                "-o",
                "json",
            ],
            None,
        )
        .expect("kubectl");
    let list: serde_json::Value = serde_json::from_str(&out.stdout).expect("event list");
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        // core/v1 as kubectl reads it: the events.k8s.io `note` is its `message`.
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|n| n.contains(fingerprint))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_with_its_fingerprint_or_a_consistent_rewrite_never_reaches_the_ca_bundle() {
    let (c, _op) = webhook_operator(&["--cert-check-interval-secs=1"]).await;
    let client = c.client().await;
    let ns = namespace(&client, "ca-forgery").await;
    wait_webhooks_active(&c, &ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cyberdesk-system");
    let ours = eventually(Duration::from_secs(20), "the published CA", || async {
        let ca = secret_ca(&secrets).await;
        (published_bundles(&c).await.iter().all(|b| *b == ca) && !ca.is_empty()).then_some(ca)
    })
    .await;

    // A CA appended together with its fingerprint in the annotation earlier builds trusted.
    let appended = TestCa::new("appended with its fingerprint").expect("CA");
    let appended = appended.cert_pem().to_string();
    rewrite_secret(
        &secrets,
        &[("ca.crt", &format!("{ours}{appended}"))],
        serde_json::json!({
            "cyberdesk.io/issued-ca-fingerprints": format!("{},{}", fingerprint(&ours), fingerprint(&appended)),
        }),
    )
    .await;
    never_published(&c, &appended, 8, "a CA appended with its fingerprint").await;
    eventually(Duration::from_secs(10), "the Secret repaired", || async {
        (!secret_ca(&secrets).await.contains(appended.trim())).then_some(())
    })
    .await;

    // A consistent rewrite: a CA, its key and a leaf it signed for the operator's names.
    let day = Duration::from_secs(86_400);
    let (forged_ca, forged_key) = cyberdesk_operator::certs::generate_ca(day).expect("CA");
    let sans = ["127.0.0.1", "cyberdesk-operator.cyberdesk-system.svc"].map(String::from);
    let (leaf_cert, leaf_key) =
        cyberdesk_operator::certs::issue_serving(&forged_ca, &forged_key, &sans, day)
            .expect("leaf");
    rewrite_secret(
        &secrets,
        &[
            ("ca.crt", &forged_ca),
            ("ca.key", &forged_key),
            ("tls.crt", &leaf_cert),
            ("tls.key", &leaf_key),
        ],
        serde_json::json!({}),
    )
    .await;
    never_published(&c, &forged_ca, 8, "a consistently forged CA").await;
    eventually(
        Duration::from_secs(10),
        "the forged CA replaced",
        || async {
            let ca = secret_ca(&secrets).await;
            (!ca.is_empty() && !ca.contains(forged_ca.trim())).then_some(())
        },
    )
    .await;
    let forged_fp = fingerprint(&forged_ca);
    eventually(
        Duration::from_secs(10),
        "an UntrustedCaRemoved event naming the forged CA",
        || async { (untrusted_events(&c, &forged_fp) > 0).then_some(()) },
    )
    .await;
    // Admission keeps working: the apiserver trusts the leaf served after the repair.
    eventually(Duration::from_secs(20), "a desk admitted", || async {
        let out = c
            .kubectl()
            .apply(
                &desk_yaml(&ns, "after-forgery", "{}"),
                &["--dry-run=server"],
            )
            .expect("kubectl");
        out.success.then_some(())
    })
    .await;
}
