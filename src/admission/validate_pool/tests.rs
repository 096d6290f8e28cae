use super::*;
use serde_json::json;

fn pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool",
           "metadata": {"name": name}, "spec": spec})
}

fn fields(verdict: &Verdict) -> Vec<&str> {
    verdict
        .violations
        .iter()
        .map(|v| v.field.as_str())
        .collect()
}

#[test]
fn a_good_pool_passes() {
    let p = pool(
        "warm",
        json!({"size": 5, "maxBooting": 2, "template": "t",
                                 "userDataSecretRef": {"name": "s", "key": "userdata"}}),
    );
    assert_eq!(
        validate_pool_spec(Operation::Create, "warm", &p, None),
        Verdict::default()
    );
}

#[test]
fn every_bad_field_is_named_at_once() {
    let long = "p".repeat(MAX_POOL_NAME + 1);
    let p = pool(
        &long,
        json!({"size": 501, "maxBooting": 0, "template": "Bad_Name", "sise": 1, "maxIdleMs": 1000}),
    );
    let verdict = validate_pool_spec(Operation::Create, &long, &p, None);
    assert_eq!(
        fields(&verdict),
        [
            "metadata.name",
            "spec.sise",
            "spec.size",
            "spec.maxBooting",
            "spec.maxIdleMs",
            "spec.template"
        ]
    );
    let missing = validate_pool_spec(Operation::Create, "p", &pool("p", json!({})), None);
    assert_eq!(fields(&missing), ["spec.size"]);
}

#[test]
fn template_and_user_data_are_immutable_and_size_is_not() {
    let old = pool("p", json!({"size": 1, "template": "a"}));
    let resized = pool("p", json!({"size": 3, "template": "a"}));
    assert!(validate_pool_spec(Operation::Update, "p", &resized, Some(&old)).allowed());
    let moved = pool("p", json!({"size": 1, "template": "b"}));
    let verdict = validate_pool_spec(Operation::Update, "p", &moved, Some(&old));
    assert_eq!(fields(&verdict), ["spec.template"]);
}

#[test]
fn the_policies_judge_the_pool() {
    let ceiling = br#"{"name": "ceiling", "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": 3600000}}}}}}"#;
    let policies = PolicySet::load(&[("ceiling".into(), ceiling.to_vec())]).expect("policy loads");
    let p = pool("p", json!({"size": 1}));
    // The default lifetime (4 h) is over this ceiling: the pool must say less.
    let verdict = validate_pool(Operation::Create, "p", "ns", &p, None, &policies);
    assert_eq!(fields(&verdict), ["spec.maxIdleMs"]);
    assert!(verdict.violations[0].message.contains("ceiling"));
    let short = pool("p", json!({"size": 1, "maxIdleMs": 600000}));
    assert!(validate_pool(Operation::Create, "p", "ns", &short, None, &policies).allowed());
}
