use super::*;

fn set(list: &[&str]) -> DeskNamespaces {
    DeskNamespaces::new(list.iter().map(|s| s.to_string()))
}

#[test]
fn an_empty_set_serves_every_namespace_and_adopts_nothing() {
    let all = set(&["", ""]);
    assert!(all.serves("team-a") && !all.restricted());
    assert_eq!(all.describe(), "every namespace");
    let one = set(&["cyberdesk-system", "cyberdesk-system"]);
    assert!(one.serves("cyberdesk-system") && !one.serves("team-a"));
    assert!(one.restricted());
    assert_eq!(one.single(), Some("cyberdesk-system"));
    assert_eq!(set(&["b", "a"]).describe(), "a,b");
    assert_eq!(all.refusal("team-a"), None);
    assert_eq!(
        one.refusal("team-a").as_deref(),
        Some(
            "this operator serves desks only in namespace cyberdesk-system (--desk-namespaces); team-a is not one of them"
        )
    );
}

#[test]
fn a_shared_vm_namespace_or_a_name_keyed_record_needs_exactly_one_namespace() {
    assert_eq!(set(&[]).problem(false, false), None);
    assert_eq!(set(&["a", "b"]).problem(false, false), None);
    assert_eq!(set(&["a"]).problem(true, true), None);
    let unset = set(&[]).problem(true, false).expect("a problem");
    assert!(
        unset.contains("it is unset") && unset.contains("share a VM"),
        "{unset}"
    );
    let two = set(&["a", "b"]).problem(false, true).expect("a problem");
    assert!(
        two.contains("it is a,b") && two.contains("Supabase"),
        "{two}"
    );
}
