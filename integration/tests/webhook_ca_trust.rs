//! Only CAs the operator issued are trusted: a certificate someone appends to `ca.crt` in
//! the webhook Secret never reaches the webhooks' caBundle, and a corrupt `ca.crt` leads to a
//! new CA with the old one still trusted beside it. Its own binary: it edits the Secret the
//! shared operator serves from (`webhook_ca_forgery.rs` has the forgeries).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::namespace;
use cyberdesk_integration::controlplane::TestCa;
use cyberdesk_integration::desks::{desk_yaml, wait_webhooks_active};
use cyberdesk_integration::operator::webhook_operator;
use cyberdesk_integration::wait::{eventually, throughout};
use cyberdesk_integration::webhook_tls::{
    published_bundles, rewrite_secret, secret_ca, served_leaf,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_cas_never_reach_the_ca_bundle_and_a_corrupt_one_is_replaced_with_overlap() {
    let (c, op) = webhook_operator(&["--cert-check-interval-secs=1"]).await;
    let client = c.client().await;
    let ns = namespace(&client, "ca-trust").await;
    wait_webhooks_active(&c, &ns).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cyberdesk-system");
    let ours = eventually(Duration::from_secs(20), "the published CA", || async {
        let ca = secret_ca(&secrets).await;
        (published_bundles(&c).await.iter().all(|b| *b == ca) && !ca.is_empty()).then_some(ca)
    })
    .await;

    // Someone who may write the Secret appends their own CA.
    let foreign = TestCa::new("not the operator")
        .expect("CA")
        .cert_pem()
        .to_string();
    rewrite_secret(
        &secrets,
        &[("ca.crt", &format!("{ours}{foreign}"))],
        serde_json::json!({}),
    )
    .await;
    throughout(Duration::from_secs(6), || async {
        for bundle in published_bundles(&c).await {
            assert!(
                !bundle.contains(foreign.trim()),
                "the foreign CA reached a caBundle"
            );
        }
    })
    .await;
    eventually(Duration::from_secs(10), "the Secret repaired", || async {
        (secret_ca(&secrets).await == ours).then_some(())
    })
    .await;
    let events = c
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
    assert!(
        events.stdout.contains("did not issue"),
        "no event: {}",
        events.stdout
    );
    assert!(published_bundles(&c).await.iter().all(|b| *b == ours));

    // A corrupt ca.crt: a new CA, with the old one still trusted beside it. The apiserver
    // trusts exactly the caBundle, so at every look the leaf served must chain to what both
    // bundles hold at that moment (bundle first, then the new leaf), and admissions on
    // the way must all succeed.
    let leaf_before = served_leaf(&ours, op.webhook).await.expect("served leaf");
    rewrite_secret(
        &secrets,
        &[(
            "ca.crt",
            "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        )],
        serde_json::json!({}),
    )
    .await;
    let started = Instant::now();
    let looks = std::cell::Cell::new(0);
    let (untrusted, failed) = (RefCell::new(Vec::new()), RefCell::new(Vec::new()));
    let look = || async {
        let [m, v] = published_bundles(&c).await;
        let mut served = None;
        for bundle in [&m, &v] {
            match served_leaf(bundle, op.webhook).await {
                Ok(leaf) => served = Some(leaf),
                Err(e) => untrusted.borrow_mut().push(e),
            }
        }
        looks.set(looks.get() + 1);
        let out = c
            .kubectl()
            .apply(
                &desk_yaml(&ns, &format!("r{}", looks.get()), "{}"),
                &["--dry-run=server"],
            )
            .expect("kubectl");
        if !out.success {
            failed.borrow_mut().push(out.stderr);
        }
        let new_ca = m.replace(ours.trim(), "");
        let of_new_ca = served.as_ref().is_some_and(|l| *l != leaf_before)
            && served_leaf(&new_ca, op.webhook).await.is_ok();
        (m == v && m != ours && m.contains(ours.trim()) && of_new_ca).then_some(m)
    };
    let renewed = eventually(Duration::from_secs(30), "a leaf of a new CA served", look).await;
    let (looks, untrusted, failed) = (looks.get(), untrusted.into_inner(), failed.into_inner());
    eprintln!(
        "new CA served after {:?} and {looks} looks",
        started.elapsed()
    );
    assert!(
        untrusted.is_empty(),
        "served a leaf the caBundle does not trust: {untrusted:?}"
    );
    assert!(
        failed.is_empty(),
        "{} admissions failed during the CA change: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        renewed.matches("BEGIN CERTIFICATE").count() == 2,
        "{renewed}"
    );
    // Admission keeps working through the change.
    let out = c
        .kubectl()
        .apply(&desk_yaml(&ns, "after", "{}"), &["--dry-run=server"])
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
}
