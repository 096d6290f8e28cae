use super::*;

fn cfg() -> MutateConfig {
    MutateConfig {
        default_timeout_ms: 3_600_000,
    }
}

/// Applies the patch the way the apiserver would and returns the result.
fn applied(object: Value) -> (Value, usize) {
    let patch = defaults_patch(&object, &cfg());
    let mut out = object;
    json_patch::patch(&mut out, &patch.0).expect("patch applies");
    (out, patch.0.len())
}

fn desk(spec: Value) -> Value {
    json!({
        "apiVersion": "cyberdesk.io/v1alpha1",
        "kind": "Cyberdesk",
        "metadata": {"name": "alice", "namespace": "default"},
        "spec": spec,
    })
}

#[test]
fn empty_spec_gets_every_default() {
    let (out, n) = applied(desk(json!({})));
    assert_eq!(n, 3);
    assert_eq!(out["spec"]["timeoutMs"], json!(3_600_000));
    assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));
    assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn missing_spec_is_created_in_one_op() {
    let mut object = desk(json!({}));
    object.as_object_mut().expect("object").remove("spec");
    let patch = defaults_patch(&object, &cfg());
    assert_eq!(
        patch.0.len(),
        2,
        "one op for /spec, one for the finalizers: {patch:?}"
    );
    let (out, _) = applied(object);
    assert_eq!(
        out["spec"],
        json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete"})
    );
    assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn null_values_count_as_absent() {
    let (out, n) = applied(desk(json!({"timeoutMs": null, "timeoutAction": null})));
    assert_eq!(n, 3);
    assert_eq!(out["spec"]["timeoutMs"], json!(3_600_000));
    assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));

    let mut object = desk(json!({}));
    object["spec"] = Value::Null;
    object["metadata"]["finalizers"] = Value::Null;
    let (out, _) = applied(object);
    assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));
    assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn partial_spec_keeps_what_the_user_set() {
    let (out, n) = applied(desk(json!({"timeoutMs": 5000, "template": "gpu"})));
    assert_eq!(n, 2);
    assert_eq!(out["spec"]["timeoutMs"], json!(5000));
    assert_eq!(out["spec"]["template"], json!("gpu"));
    assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));

    let (out, n) = applied(desk(json!({"timeoutAction": "Stop"})));
    assert_eq!(n, 2);
    assert_eq!(out["spec"]["timeoutAction"], json!("Stop"));
    assert_eq!(out["spec"]["timeoutMs"], json!(3_600_000));
}

#[test]
fn complete_object_gets_an_empty_patch() {
    let mut object = desk(json!({"timeoutMs": 1000, "timeoutAction": "Stop"}));
    object["metadata"]["finalizers"] = json!(["other.io/x", FINALIZER]);
    assert!(defaults_patch(&object, &cfg()).0.is_empty());
}

#[test]
fn other_finalizers_are_kept_and_ours_appended() {
    let mut object = desk(json!({"timeoutMs": 1000, "timeoutAction": "Stop"}));
    object["metadata"]["finalizers"] = json!(["other.io/x"]);
    let patch = defaults_patch(&object, &cfg());
    assert_eq!(patch.0.len(), 1);
    let PatchOperation::Add(op) = &patch.0[0] else {
        panic!("expected add: {patch:?}")
    };
    assert_eq!(op.path.as_str(), "/metadata/finalizers/-");
    let (out, _) = applied(object);
    assert_eq!(
        out["metadata"]["finalizers"],
        json!(["other.io/x", FINALIZER])
    );
}

#[test]
fn empty_finalizer_list_is_appended_to() {
    let mut object = desk(json!({}));
    object["metadata"]["finalizers"] = json!([]);
    let (out, _) = applied(object);
    assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn missing_metadata_is_created() {
    let object = json!({"spec": {"timeoutMs": 1000, "timeoutAction": "Stop"}});
    let (out, n) = applied(object);
    assert_eq!(n, 1);
    assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
}

#[test]
fn deleting_object_gets_nothing() {
    let mut object = desk(json!({}));
    object["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    assert!(defaults_patch(&object, &cfg()).0.is_empty());
    // Not even the finalizer when it is missing.
    object["spec"] = json!({"timeoutMs": 1000, "timeoutAction": "Stop"});
    assert!(defaults_patch(&object, &cfg()).0.is_empty());
}

#[test]
fn configured_default_is_used() {
    let patch = defaults_patch(
        &desk(json!({})),
        &MutateConfig {
            default_timeout_ms: 42_000,
        },
    );
    let mut out = desk(json!({}));
    json_patch::patch(&mut out, &patch.0).expect("applies");
    assert_eq!(out["spec"]["timeoutMs"], json!(42_000));
}

#[test]
fn hostile_shapes_get_an_empty_patch() {
    let odd = [
        json!(null),
        json!(42),
        json!("spec"),
        json!([1, 2, 3]),
        desk(json!([])),
        desk(json!("timeoutMs=5")),
        desk(json!(7)),
        json!({"metadata": "alice", "spec": {}}),
        json!({"metadata": [], "spec": {}}),
        json!({"metadata": {"finalizers": "cyberdesk.io/vm-cleanup"}, "spec": {}}),
        json!({"metadata": {"finalizers": {"a": 1}}, "spec": {}}),
    ];
    for object in odd {
        let patch = defaults_patch(&object, &cfg());
        assert!(patch.0.is_empty(), "{object} gave {patch:?}");
    }
}

#[test]
fn strange_but_valid_shapes_patch_cleanly() {
    // Keys that need escaping elsewhere in the object, non-string finalizers, a
    // deletionTimestamp of null: every patch must apply without error.
    let objects = [
        json!({"metadata": {"finalizers": [1, null, {"x": 1}], "a/b~c": 1}, "spec": {"x~/": 1}}),
        json!({"metadata": {"deletionTimestamp": null}, "spec": {}}),
        json!({}),
    ];
    for object in objects {
        let (out, _) = applied(object.clone());
        assert_eq!(out["spec"]["timeoutAction"], json!("Delete"), "{object}");
        let finalizers = out["metadata"]["finalizers"].as_array().expect("array");
        assert!(finalizers.contains(&json!(FINALIZER)), "{object}");
    }
}

#[test]
fn patch_is_idempotent() {
    let (once, _) = applied(desk(json!({"template": "x"})));
    assert!(defaults_patch(&once, &cfg()).0.is_empty());
}
