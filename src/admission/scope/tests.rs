use super::*;
use serde_json::json;

fn cfg() -> ScopeConfig {
    ScopeConfig {
        desk_namespaces: DeskNamespaces::new(["cyberdesk-system".to_string()]),
        max_metadata_bytes: 100,
    }
}

fn with_labels(labels: Value, annotations: Value) -> Value {
    json!({"metadata": {"name": "d", "labels": labels, "annotations": annotations}, "spec": {}})
}

#[test]
fn a_new_desk_outside_the_served_namespaces_is_denied_naming_the_flag() {
    let mut v = Verdict::default();
    let small = with_labels(json!({}), json!({}));
    judge(&cfg(), "team-x", Operation::Create, &small, None, &mut v);
    assert_eq!(v.violations.len(), 1);
    assert_eq!(v.violations[0].field, NAMESPACE_FIELD);
    assert!(
        v.violations[0]
            .message
            .contains("cyberdesk-system (--desk-namespaces)"),
        "{:?}",
        v.violations
    );
    let mut v = Verdict::default();
    judge(
        &cfg(),
        "cyberdesk-system",
        Operation::Create,
        &small,
        None,
        &mut v,
    );
    assert!(v.allowed());
    // An existing desk there can still be changed.
    let mut v = Verdict::default();
    judge(
        &cfg(),
        "team-x",
        Operation::Update,
        &small,
        Some(&small),
        &mut v,
    );
    assert!(v.allowed());
    // Unrestricted: every namespace.
    let mut v = Verdict::default();
    let open = ScopeConfig {
        max_metadata_bytes: 100,
        ..Default::default()
    };
    judge(&open, "team-x", Operation::Create, &small, None, &mut v);
    assert!(v.allowed());
}

#[test]
fn labels_and_annotations_over_the_limit_are_denied_with_their_field_paths() {
    let big = with_labels(json!({"a": "x".repeat(60)}), json!({"b": "y".repeat(60)}));
    let mut v = Verdict::default();
    check_metadata_size(&big, None, 100, &mut v);
    let fields: Vec<&str> = v.violations.iter().map(|f| f.field.as_str()).collect();
    assert_eq!(fields, [LABELS_FIELD, ANNOTATIONS_FIELD]);
    assert!(
        v.violations[0].message.contains("61 bytes")
            && v.violations[0]
                .message
                .contains("at most 100 bytes (--max-metadata-bytes)")
            && v.violations[0].message.contains("here 122"),
        "{}",
        v.violations[0].message
    );
    // At the limit: allowed.
    let exact = with_labels(json!({"a": "x".repeat(99)}), json!(null));
    let mut v = Verdict::default();
    check_metadata_size(&exact, None, 100, &mut v);
    assert!(v.allowed());
    // Only labels: only metadata.labels is named.
    let labels_only = with_labels(json!({"a": "x".repeat(200)}), json!(null));
    let mut v = Verdict::default();
    check_metadata_size(&labels_only, None, 100, &mut v);
    assert_eq!(v.violations.len(), 1);
    assert_eq!(v.violations[0].field, LABELS_FIELD);
}

#[test]
fn an_update_is_denied_only_when_it_grows_past_the_limit() {
    let stored = with_labels(json!({"a": "x".repeat(200)}), json!(null));
    let grown = with_labels(json!({"a": "x".repeat(200), "b": "c"}), json!(null));
    let shrunk = with_labels(json!({"a": "x".repeat(150)}), json!(null));
    let mut v = Verdict::default();
    check_metadata_size(&stored, Some(&stored), 100, &mut v);
    check_metadata_size(&shrunk, Some(&stored), 100, &mut v);
    assert!(v.allowed(), "{:?}", v.violations);
    check_metadata_size(&grown, Some(&stored), 100, &mut v);
    assert!(!v.allowed());
    let small = with_labels(json!({}), json!(null));
    let mut v = Verdict::default();
    check_metadata_size(&stored, Some(&small), 100, &mut v);
    assert!(!v.allowed());
}
