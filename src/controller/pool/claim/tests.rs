use super::*;

#[test]
fn the_claim_tests_availability_first_and_hands_the_vm_over_in_one_patch() {
    let mut desk = Cyberdesk::new("alice", Default::default());
    desk.metadata.namespace = Some("team".into());
    desk.metadata.uid = Some("u-1".into());
    let owner = json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "name": "alice", "uid": "u-1", "controller": true});
    let now = Timestamp::from_second(1_800_000_000).expect("time");
    let patch = claim_patch(&desk, &owner, now);
    let ops = patch.as_array().expect("ops");
    assert_eq!(ops[0]["op"], "test");
    assert_eq!(ops[0]["path"], "/metadata/labels/cyberdesk.io~1pool-state");
    assert_eq!(ops[0]["value"], "available");
    assert_eq!(ops[1]["op"], "test");
    assert_eq!(ops[1]["path"], "/metadata/deletionTimestamp");
    assert_eq!(ops[1]["value"], Value::Null);
    assert_eq!(ops[2]["value"], "claimed");
    let added: Vec<(&str, &Value)> = ops[3..]
        .iter()
        .filter_map(|op| Some((op["path"].as_str()?, &op["value"])))
        .collect();
    assert!(added.contains(&("/metadata/labels/cyberdesk-instance", &json!("alice"))));
    assert!(added.contains(&("/metadata/labels/cyberdesk.io~1desk-uid", &json!("u-1"))));
    assert!(added.contains(&(
        "/metadata/annotations/cyberdesk.io~1claimed-at",
        &json!(time::format(now))
    )));
    assert!(added.contains(&("/metadata/ownerReferences", &json!([owner]))));
    // It parses as the JSON patch the client sends.
    let _: json_patch::Patch = serde_json::from_value(patch).expect("a JSON patch");
}

#[test]
fn a_vm_is_reserved_by_one_pass_at_a_time_and_remembered_per_desk() {
    let memory = PoolVms::default();
    assert!(memory.reserve("vm-1"));
    assert!(
        !memory.reserve("vm-1"),
        "a second pass must not try the same VM"
    );
    memory.release("vm-1");
    assert!(memory.reserve("vm-1"));
    memory.record("desk-1", "vm-1");
    assert_eq!(memory.of_desk("desk-1").as_deref(), Some("vm-1"));
    assert!(memory.is_taken("vm-1"));
    memory.forget("desk-1");
    assert!(!memory.is_taken("vm-1"));
    assert_eq!(memory.of_desk("desk-1"), None);
}
