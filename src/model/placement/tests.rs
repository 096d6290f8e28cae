use super::*;

#[test]
fn the_default_puts_the_vm_beside_its_desk() {
    let p = Placement::default();
    assert_eq!(p.vm_namespace("team-a"), "team-a");
    assert_eq!(p.vm_name("alice"), "cyberdesk-alice");
    assert!(!p.elsewhere("team-a"));
}

#[test]
fn the_platform_layout_puts_every_vm_in_one_namespace_by_the_desk_name() {
    let p = Placement {
        namespace: Some("kubevirt".into()),
        prefix: String::new(),
    };
    let uuid = "0b7e4c1a-5d2f-4e8a-9c3b-1f2a3b4c5d6e";
    assert_eq!(p.vm_namespace("cyberdesk-system"), "kubevirt");
    assert_eq!(p.vm_name(uuid), uuid);
    assert!(p.elsewhere("cyberdesk-system"));
    assert!(!p.elsewhere("kubevirt"));
}

#[test]
fn labels_name_the_owning_desk() {
    let labels = vm_labels("team-a", "bob", "u-1");
    assert_eq!(labels[names::LABEL_INSTANCE], "bob");
    assert_eq!(labels[names::LABEL_DESK_NAMESPACE], "team-a");
    assert_eq!(labels[names::LABEL_DESK_UID], "u-1");
    assert_eq!(labels[names::LABEL_APP], "cyberdesk");
    assert_eq!(labels.len(), 6);
    // A desk not stored yet has no uid: no empty label.
    assert!(!vm_labels("team-a", "bob", "").contains_key(names::LABEL_DESK_UID));
}

#[test]
fn bad_prefixes_and_namespaces_are_explained() {
    assert_eq!(prefix_problem(""), None);
    assert_eq!(prefix_problem("vm-"), None);
    assert!(prefix_problem("VM-").is_some());
    assert!(prefix_problem("-x").is_some());
    assert!(prefix_problem(&"a".repeat(63)).is_some());
    assert_eq!(namespace_problem("kubevirt"), None);
    assert!(namespace_problem("").is_some());
    assert!(namespace_problem("Kube").is_some());
    assert!(namespace_problem("a-").is_some());
}
