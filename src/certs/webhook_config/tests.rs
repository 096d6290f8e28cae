use super::*;

fn params(target: WebhookTarget) -> WebhookConfigParams {
    WebhookConfigParams {
        target,
        timeout_seconds: 5,
    }
}

#[test]
fn service_target_matches_the_shipped_manifest() {
    let p = params(WebhookTarget::Service {
        name: "cyberdesk-operator".into(),
        namespace: "cyberdesk-system".into(),
        port: 443,
    });
    let shipped = include_str!("../../../manifests/base/webhooks.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(shipped)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    assert_eq!(docs[0], mutating(&p, None));
    assert_eq!(docs[1], validating(&p, None));
}

#[test]
fn url_target_and_ca_bundle() {
    let p = params(WebhookTarget::Url("https://127.0.0.1:9443/".into()));
    let v = validating(&p, Some("PEM"));
    let cc = &v["webhooks"][0]["clientConfig"];
    assert_eq!(cc["url"], "https://127.0.0.1:9443/validate");
    assert_eq!(cc["caBundle"], B64.encode("PEM"));
    assert!(cc.get("service").is_none());
    let yaml = render_yaml(&p, Some("PEM")).expect("renders");
    assert!(yaml.contains("kind: MutatingWebhookConfiguration") && yaml.contains("---"));
}

#[test]
fn every_namespace_is_covered() {
    let p = params(WebhookTarget::Url("https://127.0.0.1:9443".into()));
    for config in [mutating(&p, None), validating(&p, None)] {
        assert!(config["webhooks"][0].get("namespaceSelector").is_none());
    }
}

#[test]
fn the_ca_bundle_patch_names_only_the_bundle() {
    let patch = ca_bundle_patch(
        "ValidatingWebhookConfiguration",
        "cfg",
        VALIDATING_WEBHOOK,
        "PEM",
    );
    let hook = &patch["webhooks"][0];
    assert_eq!(hook.as_object().map(|o| o.len()), Some(2));
    assert_eq!(hook["clientConfig"].as_object().map(|o| o.len()), Some(1));
    assert_eq!(hook["clientConfig"]["caBundle"], B64.encode("PEM"));
    assert_eq!(patch["metadata"].as_object().map(|o| o.len()), Some(1));
}
