use super::*;

#[test]
fn a_pool_member_carries_no_desk_labels_and_has_annotations() {
    let mut vm = json!({
        "metadata": {"name": "v", "labels": {"cyberdesk-instance": "v", "app": "cyberdesk", "cyberdesk.io/pool": "warm"}},
        "spec": {"template": {"metadata": {"labels": {"cyberdesk-instance": "v", "cyberdesk.io/desk-uid": "x"}}}}
    });
    as_pool_member(&mut vm, "warm");
    assert!(vm.pointer("/metadata/labels/cyberdesk-instance").is_none());
    assert!(
        vm.pointer("/spec/template/metadata/labels/cyberdesk-instance")
            .is_none()
    );
    assert!(
        vm.pointer("/spec/template/metadata/labels/cyberdesk.io~1desk-uid")
            .is_none()
    );
    assert_eq!(vm["metadata"]["labels"]["app"], "cyberdesk");
    assert_eq!(vm["metadata"]["annotations"]["cyberdesk.io/pool"], "warm");
}

#[test]
fn member_names_are_distinct_and_valid() {
    let a = suffix();
    let b = suffix();
    assert_eq!(a.len(), 5);
    assert!(
        a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    );
    assert_ne!(a, b, "two random suffixes collided (1 in 60 million)");
}
