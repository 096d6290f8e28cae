//! The webhook configurations belong to whoever installed them: the operator only keeps
//! their caBundle current, so an admin's edit survives operator restarts and CA rotations.
//! Its own binary: it restarts the operator that serves the cluster's only webhooks.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster, install_everything};
use cyberdesk_integration::operator::{OperatorProcess, free_addr, register_webhooks};
use cyberdesk_integration::wait::eventually;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::DeleteParams;

async fn start(c: &Cluster, n: usize, webhook: std::net::SocketAddr) -> OperatorProcess {
    let args = [
        "--extra-san=127.0.0.1".to_string(),
        "--leader-election=false".to_string(),
        "--policy-dir=/nonexistent".to_string(),
        "--cert-check-interval-secs=1".to_string(),
    ];
    let op = OperatorProcess::start_on(c, &format!("owner-{n}"), webhook, &args);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    op
}

/// (timeoutSeconds, caBundle as PEM) of the validating webhook.
async fn validating(api: &Api<ValidatingWebhookConfiguration>) -> (Option<i32>, String) {
    let cfg = api
        .get("cyberdesk-validating")
        .await
        .expect("configuration");
    let hook = cfg
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .next()
        .expect("one webhook");
    let bundle = hook
        .client_config
        .ca_bundle
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    (hook.timeout_seconds, bundle.unwrap_or_default())
}

async fn secret_ca(secrets: &Api<Secret>) -> Option<String> {
    let s = secrets.get_opt("cyberdesk-webhook-tls").await.ok()??;
    let bytes = s.data?.get("ca.crt")?.0.clone();
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_edit_survives_restart_and_ca_rotation() {
    let c = cluster();
    install_everything(&c).await;
    let webhook = free_addr();
    register_webhooks(&c, webhook).expect("register");
    let client = c.client().await;
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "cyberdesk-system");

    let first = start(&c, 1, webhook).await;
    eventually(Duration::from_secs(20), "caBundle published", || async {
        let (_, bundle) = validating(&configs).await;
        (!bundle.is_empty() && Some(&bundle) == secret_ca(&secrets).await.as_ref()).then_some(())
    })
    .await;
    let patched = c
        .kubectl()
        .run(
            &[
                "patch",
                "validatingwebhookconfiguration",
                "cyberdesk-validating",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/webhooks/0/timeoutSeconds","value":3}]"#,
            ],
            None,
        )
        .expect("kubectl");
    assert!(patched.success, "{}", patched.stderr);
    drop(first);
    // Take the caBundle out while no operator runs: its return shows the restarted
    // operator has applied (an apply of an unchanged value would leave no trace).
    let cleared = c
        .kubectl()
        .run(
            &[
                "patch",
                "validatingwebhookconfiguration",
                "cyberdesk-validating",
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/webhooks/0/clientConfig/caBundle"}]"#,
            ],
            None,
        )
        .expect("kubectl");
    assert!(cleared.success, "{}", cleared.stderr);
    assert!(validating(&configs).await.1.is_empty());

    let _second = start(&c, 2, webhook).await;
    let before = eventually(
        Duration::from_secs(30),
        "the restarted operator's caBundle",
        || async {
            let (_, bundle) = validating(&configs).await;
            let ca = secret_ca(&secrets).await?;
            (!bundle.is_empty() && bundle == ca).then_some(bundle)
        },
    )
    .await;
    let (timeout, _) = validating(&configs).await;
    assert_eq!(
        timeout,
        Some(3),
        "the restart undid the admin's timeoutSeconds"
    );

    // A new CA: the Secret is gone, so the operator makes a new one and publishes it.
    secrets
        .delete("cyberdesk-webhook-tls", &DeleteParams::default())
        .await
        .expect("delete Secret");
    let after = eventually(
        Duration::from_secs(30),
        "the new CA in caBundle",
        || async {
            let (_, bundle) = validating(&configs).await;
            let ca = secret_ca(&secrets).await?;
            (bundle != before && bundle == ca).then_some(bundle)
        },
    )
    .await;
    assert!(after.contains("BEGIN CERTIFICATE"));
    let (timeout, _) = validating(&configs).await;
    assert_eq!(
        timeout,
        Some(3),
        "the CA rotation undid the admin's timeoutSeconds"
    );

    // Only caBundle is the operator's: its field manager owns nothing else.
    let cfg = configs
        .get("cyberdesk-validating")
        .await
        .expect("configuration");
    let owned: Vec<String> = cfg
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.manager.as_deref() == Some("cyberdesk-operator-ca-bundle"))
        .filter_map(|m| m.fields_v1.map(|f| f.0.to_string()))
        .collect();
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert!(
        owned[0].contains("caBundle")
            && !owned[0].contains("timeoutSeconds")
            && !owned[0].contains("rules"),
        "{}",
        owned[0]
    );
}
