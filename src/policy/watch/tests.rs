use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use serde_json::json;

use super::*;

fn configmap(data: &[(&str, String)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some("cyberdesk-policies".into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

fn ceiling(name: &str) -> String {
    json!({"name": name, "enforcement": "deny", "schema":
        {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": 1000}}}}}})
    .to_string()
}

#[test]
fn a_set_that_does_not_load_leaves_the_last_good_one_in_force() {
    let (store, metrics) = (
        PolicyStore::default(),
        Metrics::new("test", &[]).expect("metrics"),
    );
    let empty_dir = std::path::Path::new("/nonexistent-policy-dir");
    let good = configmap(&[("ceiling.json", ceiling("ceiling"))]);
    assert_eq!(reload(&store, &metrics, empty_dir, Some(&good)), Ok(1));
    assert_eq!(store.current().names(), ["ceiling"]);

    // One broken file among good ones refuses the whole new set.
    let broken = configmap(&[
        ("other.json", ceiling("other")),
        ("broken.json", "{".into()),
    ]);
    let report = reload(&store, &metrics, empty_dir, Some(&broken)).expect_err("refused");
    assert!(report.contains("broken.json"), "{report}");
    assert_eq!(
        store.current().names(),
        ["ceiling"],
        "the last good set stays"
    );
    let errors = metrics.policy_reload.with_label_values(&["error"]).get();
    let successes = metrics.policy_reload.with_label_values(&["success"]).get();
    assert_eq!((successes, errors), (1, 1));

    // Keys that are not .json are not policies; removing the ConfigMap lifts them all.
    let notes = configmap(&[("README.txt", "{".into())]);
    assert_eq!(reload(&store, &metrics, empty_dir, Some(&notes)), Ok(0));
    assert_eq!(reload(&store, &metrics, empty_dir, None), Ok(0));
    assert!(store.current().is_empty());
}
