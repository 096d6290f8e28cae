use super::*;
use crate::model::names::VM_PREFIX;
use crate::policy::PolicySet;
use serde_json::json;

const MAX_NAME_LEN: usize = 63 - VM_PREFIX.len();

const NOW: &str = "2025-06-01T12:00:00Z";

fn cfg() -> ValidateConfig {
    ValidateConfig {
        min_timeout_ms: 1_000,
        max_timeout_ms: 30 * 24 * 3_600_000,
        vm_name_prefix: VM_PREFIX.into(),
    }
}

fn now() -> Timestamp {
    NOW.parse().expect("valid timestamp")
}

fn desk(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "cyberdesk.io/v1alpha1",
        "kind": "Cyberdesk",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

fn run_with(
    op: Operation,
    name: &str,
    object: &Value,
    old: Option<&Value>,
    policies: &PolicySet,
) -> Verdict {
    let input = ValidationInput {
        operation: op,
        name,
        namespace: "default",
        object,
        old_object: old,
    };
    validate_at(&input, &cfg(), policies, now())
}

fn create(object: &Value) -> Verdict {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    run_with(Operation::Create, name, object, None, &PolicySet::default())
}

fn update(old: &Value, object: &Value) -> Verdict {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    run_with(
        Operation::Update,
        name,
        object,
        Some(old),
        &PolicySet::default(),
    )
}

fn fields(verdict: &Verdict) -> Vec<&str> {
    verdict
        .violations
        .iter()
        .map(|v| v.field.as_str())
        .collect()
}

fn message_for<'a>(verdict: &'a Verdict, field: &str) -> &'a str {
    verdict
        .violations
        .iter()
        .find(|v| v.field == field)
        .map(|v| v.message.as_str())
        .unwrap_or_else(|| panic!("no violation on {field}: {verdict:?}"))
}

fn good() -> Value {
    desk(
        "alice",
        json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete"}),
    )
}

/// An old object whose VM exists, for UPDATE tests.
fn running(spec: Value) -> Value {
    let mut old = desk("alice", spec);
    old["status"] =
        json!({"virtualMachineRef": "cyberdesk-alice", "startTime": "2025-06-01T11:00:00Z"});
    old
}

#[test]
fn good_object_passes_quietly() {
    let verdict = create(&good());
    assert_eq!(verdict, Verdict::default());
    assert!(verdict.allowed());
    let full = desk(
        "a",
        json!({"timeoutMs": 1000, "timeoutAction": "Stop", "template": "cyberdesk-vm-template",
               "userDataSecretRef": {"name": "alice.user-data", "key": "user_data.yaml"}}),
    );
    assert_eq!(create(&full), Verdict::default());
}

#[test]
fn a_pool_desk_names_its_pool_and_nothing_the_pool_provides() {
    assert_eq!(
        create(&desk("a", json!({"timeoutMs": 60000, "pool": "warm"}))),
        Verdict::default()
    );
    let both = create(&desk(
        "a",
        json!({"pool": "warm", "template": "t", "userDataSecretRef": {"name": "s", "key": "userdata"}}),
    ));
    assert_eq!(fields(&both), ["spec.template", "spec.userDataSecretRef"]);
    assert!(message_for(&both, "spec.template").contains("set template on the CyberdeskPool"));
    let bad = create(&desk("a", json!({"pool": "Warm_Pool"})));
    assert_eq!(fields(&bad), ["spec.pool"]);
    let changed = update(
        &running(json!({"pool": "warm"})),
        &desk("alice", json!({"pool": "cold"})),
    );
    assert_eq!(fields(&changed), ["spec.pool"]);
    let added = update(
        &desk("alice", json!({})),
        &desk("alice", json!({"pool": "warm"})),
    );
    assert_eq!(fields(&added), ["spec.pool"]);
}

#[test]
fn name_fits_the_vm_name() {
    assert!(create(&desk(&"a".repeat(MAX_NAME_LEN), json!({}))).allowed());
    let too_long = create(&desk(&"a".repeat(MAX_NAME_LEN + 1), json!({})));
    assert_eq!(fields(&too_long), ["metadata.name"]);
    let message = message_for(&too_long, "metadata.name");
    assert!(message.contains("no more than 53 characters"), "{message}");
    assert!(message.contains("cyberdesk-<name>"), "{message}");
    assert!(message.contains("54 characters"), "{message}");
}

#[test]
fn without_a_prefix_the_crds_53_still_hold() {
    let bare = ValidateConfig {
        vm_name_prefix: String::new(),
        ..cfg()
    };
    let judge = |name: &str| {
        let object = desk(name, json!({}));
        let input = ValidationInput {
            operation: Operation::Create,
            name,
            namespace: "ns",
            object: &object,
            old_object: None,
        };
        validate_at(&input, &bare, &PolicySet::default(), now())
    };
    // The platform names desks by a UUID (36 characters).
    assert!(judge("0b7e4c1a-5d2f-4e8a-9c3b-1f2a3b4c5d6e").allowed());
    assert!(judge(&"a".repeat(53)).allowed());
    let too_long = judge(&"a".repeat(54));
    let message = message_for(&too_long, "metadata.name");
    assert!(message.contains("no more than 53 characters"), "{message}");
    assert!(message.contains("CRD"), "{message}");
    // A longer prefix lowers the limit.
    let long = ValidateConfig {
        vm_name_prefix: "cyberdesk-desktop-".into(),
        ..cfg()
    };
    let object = desk(&"a".repeat(46), json!({}));
    let input = ValidationInput {
        operation: Operation::Create,
        name: &"a".repeat(46),
        namespace: "ns",
        object: &object,
        old_object: None,
    };
    let verdict = validate_at(&input, &long, &PolicySet::default(), now());
    assert!(message_for(&verdict, "metadata.name").contains("no more than 45"));
}

#[test]
fn name_must_be_a_dns_label() {
    let cases = [
        ("Alice", "uppercase"),
        ("alice_desk", "'_'"),
        ("-alice", "starts with '-'"),
        ("alice-", "ends with '-'"),
        ("alice.desk", "'.'"),
        ("älice", "'ä'"),
        ("a b", "' '"),
    ];
    for (name, expected) in cases {
        let verdict = create(&desk(name, json!({})));
        assert_eq!(fields(&verdict), ["metadata.name"], "{name}");
        let message = message_for(&verdict, "metadata.name");
        assert!(message.contains(expected), "{name}: {message}");
        assert!(message.contains("lowercase letters"), "{message}");
    }
    for name in ["a", "0", "123", "a-b-c", "desk-01"] {
        assert!(create(&desk(name, json!({}))).allowed(), "{name}");
    }
}

#[test]
fn huge_name_is_not_echoed() {
    let name = "X".repeat(10_000);
    let verdict = create(&desk(&name, json!({})));
    assert_eq!(
        fields(&verdict),
        ["metadata.name", "metadata.name"],
        "length and format"
    );
    for v in &verdict.violations {
        assert!(v.message.len() < 500, "{}", v.message.len());
    }
    assert!(
        verdict.violations[1].message.contains("10000 characters"),
        "{}",
        verdict.violations[1].message
    );
    // 30 characters but 60 bytes: one message, about the characters.
    let accented = create(&desk(&"é".repeat(30), json!({})));
    assert_eq!(fields(&accented), ["metadata.name"]);
    assert!(message_for(&accented, "metadata.name").contains("'é'"));
    let multibyte = create(&desk(&"é".repeat(5_000), json!({})));
    assert!(multibyte.violations.iter().all(|v| v.message.len() < 500));
}

#[test]
fn missing_name_is_a_violation() {
    let mut object = good();
    object["metadata"] = json!({});
    let verdict = run_with(Operation::Create, "", &object, None, &PolicySet::default());
    assert_eq!(fields(&verdict), ["metadata.name"]);
    assert!(message_for(&verdict, "metadata.name").contains("required"));
    // The object's own name is used when the request gives none.
    let verdict = run_with(
        Operation::Create,
        "",
        &desk("Bad", json!({})),
        None,
        &PolicySet::default(),
    );
    assert!(message_for(&verdict, "metadata.name").contains("\"Bad\""));
}

#[test]
fn timeout_range() {
    for ok in [1_000, 3_600_000, 30 * 24 * 3_600_000_i64] {
        assert!(
            create(&desk("a", json!({"timeoutMs": ok}))).allowed(),
            "{ok}"
        );
    }
    for bad in [999, 0, -1, 30 * 24 * 3_600_000_i64 + 1, i64::MIN, i64::MAX] {
        let verdict = create(&desk("a", json!({"timeoutMs": bad})));
        assert_eq!(fields(&verdict), ["spec.timeoutMs"], "{bad}");
        let message = message_for(&verdict, "spec.timeoutMs");
        assert!(
            message.contains("between 1000 (1s) and 2592000000 (30d)"),
            "{message}"
        );
        assert!(message.contains(&bad.to_string()), "{message}");
    }
    // Absent or null: defaulted elsewhere.
    assert!(create(&desk("a", json!({}))).allowed());
    assert!(create(&desk("a", json!({"timeoutMs": null}))).allowed());
}

#[test]
fn timeout_type_confusion_is_a_violation() {
    let cases = [
        (json!("3600000"), "a string (\"3600000\")"),
        (json!("1h"), "a string"),
        (json!(1.5), "whole number"),
        (json!(3_600_000.0), "whole number"),
        (json!(1e308), "whole number"),
        (json!(u64::MAX), "far too large"),
        (json!(true), "a boolean"),
        (json!([1]), "an array"),
        (json!({"ms": 1}), "an object"),
        (json!(-1.0), "whole number"),
    ];
    for (value, expected) in cases {
        let verdict = create(&desk("a", json!({"timeoutMs": value.clone()})));
        assert_eq!(fields(&verdict), ["spec.timeoutMs"], "{value}");
        let message = message_for(&verdict, "spec.timeoutMs");
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn timeout_action_values() {
    for ok in ["Delete", "Stop"] {
        assert!(create(&desk("a", json!({"timeoutAction": ok}))).allowed());
    }
    let cases = [
        (json!("delete"), "capitalisation"),
        (json!("STOP"), "capitalisation"),
        (json!("Pause"), "a string (\"Pause\")"),
        (json!(""), "a string (\"\")"),
        (json!(1), "a number (1)"),
        (json!(["Delete"]), "an array"),
    ];
    for (value, expected) in cases {
        let verdict = create(&desk("a", json!({"timeoutAction": value.clone()})));
        assert_eq!(fields(&verdict), ["spec.timeoutAction"], "{value}");
        let message = message_for(&verdict, "spec.timeoutAction");
        assert!(message.contains("\"Delete\" or \"Stop\""), "{message}");
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn template_is_a_configmap_name() {
    for ok in [
        "cyberdesk-vm-template",
        "a",
        "gpu.templates.v2",
        &"a".repeat(253),
    ] {
        assert!(
            create(&desk("a", json!({"template": ok}))).allowed(),
            "{ok}"
        );
    }
    let cases = [
        (json!(""), "must not be empty"),
        (json!("GPU"), "not a valid object name"),
        (json!("a..b"), "not a valid object name"),
        (json!(".a"), "not a valid object name"),
        (json!("a-"), "not a valid object name"),
        (json!("a/b"), "not a valid object name"),
        (json!("a".repeat(254)), "no more than 253"),
        (json!(5), "a number"),
        (json!({"name": "x"}), "an object"),
    ];
    for (value, expected) in cases {
        let verdict = create(&desk("a", json!({"template": value.clone()})));
        assert_eq!(fields(&verdict), ["spec.template"], "{value}");
        let message = message_for(&verdict, "spec.template");
        assert!(message.contains(expected), "{value}: {message}");
        assert!(message.len() < 400, "{message}");
    }
}

#[test]
fn user_data_secret_ref_shape() {
    let ok = json!({"userDataSecretRef": {"name": "s", "key": "user-data"}});
    assert!(create(&desk("a", ok)).allowed());
    let cases = [
        (json!("s/user-data"), vec!["spec.userDataSecretRef"]),
        (json!([]), vec!["spec.userDataSecretRef"]),
        (
            json!({}),
            vec!["spec.userDataSecretRef.name", "spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "", "key": ""}),
            vec!["spec.userDataSecretRef.name", "spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "S", "key": "k"}),
            vec!["spec.userDataSecretRef.name"],
        ),
        (
            json!({"name": 1, "key": "k"}),
            vec!["spec.userDataSecretRef.name"],
        ),
        (
            json!({"name": "s", "key": "a/b"}),
            vec!["spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "s", "key": ".."}),
            vec!["spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "s", "key": "..data"}),
            vec!["spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "s", "key": "."}),
            vec!["spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "s", "key": "k".repeat(254)}),
            vec!["spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "s", "key": null}),
            vec!["spec.userDataSecretRef.key"],
        ),
        (
            json!({"name": "s", "key": false}),
            vec!["spec.userDataSecretRef.key"],
        ),
    ];
    for (value, expected) in cases {
        let verdict = create(&desk("a", json!({"userDataSecretRef": value.clone()})));
        assert_eq!(fields(&verdict), expected, "{value}");
    }
    for key in [
        "user-data",
        "User_Data.yaml",
        ".hidden",
        "k".repeat(253).as_str(),
    ] {
        let verdict = create(&desk(
            "a",
            json!({"userDataSecretRef": {"name": "s", "key": key}}),
        ));
        assert!(verdict.allowed(), "{key}: {verdict:?}");
    }
}

#[test]
fn unknown_fields_are_refused() {
    let verdict = create(&desk(
        "a",
        json!({"timeoutMS": 5, "a": {"a": {"a": 1}}, "x.y/z": 1}),
    ));
    assert_eq!(
        fields(&verdict),
        ["spec.a", "spec.timeoutMS", "spec[x.y/z]"]
    );
    assert!(message_for(&verdict, "spec.timeoutMS").contains("did you mean \"timeoutMs\"?"));
    assert!(
        message_for(&verdict, "spec.a")
            .contains("timeoutMs, timeoutAction, template, userDataSecretRef")
    );

    let verdict = create(&desk(
        "a",
        json!({"userDataSecretRef": {"name": "s", "key": "k", "namespace": "other"}}),
    ));
    assert_eq!(fields(&verdict), ["spec.userDataSecretRef.namespace"]);

    let mut many = serde_json::Map::new();
    for i in 0..1_000 {
        many.insert(format!("f{i:04}"), json!(i));
    }
    let verdict = create(&desk("a", Value::Object(many)));
    assert_eq!(verdict.violations.len(), MAX_UNKNOWN_FIELDS + 1);
    assert_eq!(verdict.violations[MAX_UNKNOWN_FIELDS].field, "spec");
    assert!(
        verdict.violations[MAX_UNKNOWN_FIELDS]
            .message
            .contains("990 more")
    );

    let long_key = "k".repeat(10_000);
    let verdict = create(&desk("a", json!({ long_key: 1 })));
    assert!(
        verdict
            .violations
            .iter()
            .all(|v| v.field.len() < 100 && v.message.len() < 500),
        "{verdict:?}"
    );
}

#[test]
fn spec_must_be_an_object() {
    for spec in [json!([]), json!("x"), json!(5), json!(true)] {
        let verdict = create(&desk("a", spec.clone()));
        assert_eq!(fields(&verdict), ["spec"], "{spec}");
        assert!(message_for(&verdict, "spec").contains("must be an object"));
    }
    let mut object = good();
    object.as_object_mut().expect("object").remove("spec");
    let verdict = create(&object);
    assert_eq!(fields(&verdict), ["spec"]);
    assert!(message_for(&verdict, "spec").contains("required"));
    assert_eq!(fields(&create(&desk("a", json!(null)))), ["spec"]);
}

#[test]
fn every_violation_is_reported_at_once() {
    let object = desk(
        "Bad_Name",
        json!({
            "timeoutMs": "forever",
            "timeoutAction": "Explode",
            "template": "Not A Name",
            "userDataSecretRef": {"name": "", "key": "a b"}
        }),
    );
    let verdict = create(&object);
    assert_eq!(
        fields(&verdict),
        [
            "metadata.name",
            "spec.timeoutMs",
            "spec.timeoutAction",
            "spec.template",
            "spec.userDataSecretRef.name",
            "spec.userDataSecretRef.key"
        ]
    );
}

#[test]
fn hostile_objects_never_panic() {
    let objects = [
        json!(null),
        json!(1),
        json!("Cyberdesk"),
        json!([good()]),
        json!({}),
        json!({"metadata": "x", "spec": {}}),
        json!({"spec": {"timeoutMs": {"$numberLong": "9"}, "userDataSecretRef": {"name": {"a": 1}, "key": [1]}}}),
        json!({"spec": {"userDataSecretRef": {"name": "é".repeat(10_000), "key": "ü".repeat(10_000)}}}),
        json!({"spec": {"template": "\u{0}\u{1b}[31m"}, "status": "x"}),
    ];
    let set = PolicySet::load(&[(
        "p.json".into(),
        br#"{"name":"p","schema":{"properties":{"spec":{"properties":{"timeoutMs":{"maximum":5}}}}}}"#.to_vec(),
    )])
    .expect("loads");
    for object in &objects {
        for op in [Operation::Create, Operation::Update] {
            for old in [
                None,
                Some(&json!(null)),
                Some(&json!([])),
                Some(&running(json!({"template": "a"}))),
            ] {
                let verdict = run_with(op, "alice", object, old, &set);
                for v in &verdict.violations {
                    assert!(v.message.len() < 1_000, "{}", v.message);
                }
            }
        }
    }
    let verdict = run_with(
        Operation::Create,
        "alice",
        &json!([1, 2]),
        None,
        &PolicySet::default(),
    );
    assert_eq!(fields(&verdict), [""]);
    assert!(
        verdict.violations[0]
            .message
            .contains("must be a JSON object")
    );
}

#[test]
fn template_is_immutable_once_the_vm_exists() {
    let old = running(json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete", "template": "a"}));
    let new = desk(
        "alice",
        json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete", "template": "b"}),
    );
    let verdict = update(&old, &new);
    assert_eq!(fields(&verdict), ["spec.template"]);
    let message = message_for(&verdict, "spec.template");
    assert!(
        message
            .contains("spec.template cannot change once the VirtualMachine exists (it was \"a\")"),
        "{message}"
    );

    // Removing it, or setting it where the default was used, is a change too.
    let removed = desk(
        "alice",
        json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete"}),
    );
    assert_eq!(fields(&update(&old, &removed)), ["spec.template"]);
    let old_default = running(json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete"}));
    let verdict = update(&old_default, &new);
    assert!(message_for(&verdict, "spec.template").contains("it was not set"));
    // Null and absent are the same.
    let null_template = desk(
        "alice",
        json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete", "template": null}),
    );
    assert!(update(&old_default, &null_template).allowed());
}

#[test]
fn secret_ref_is_immutable_once_the_vm_exists() {
    let old =
        running(json!({"timeoutAction": "Delete", "userDataSecretRef": {"name": "s", "key": "k"}}));
    let new = desk(
        "alice",
        json!({"timeoutAction": "Delete", "userDataSecretRef": {"name": "s", "key": "k2"}}),
    );
    let verdict = update(&old, &new);
    assert_eq!(fields(&verdict), ["spec.userDataSecretRef"]);
    let message = message_for(&verdict, "spec.userDataSecretRef");
    assert!(
        message.contains("it was Secret \"s\" key \"k\""),
        "{message}"
    );
    let same = desk(
        "alice",
        json!({"timeoutAction": "Delete", "userDataSecretRef": {"key": "k", "name": "s"}}),
    );
    assert!(update(&old, &same).allowed());
}

#[test]
fn fields_may_change_before_the_vm_exists() {
    let mut old = desk(
        "alice",
        json!({"timeoutAction": "Delete", "template": "a", "userDataSecretRef": {"name": "s", "key": "k"}}),
    );
    let new = desk(
        "alice",
        json!({"timeoutAction": "Delete", "template": "b", "userDataSecretRef": {"name": "t", "key": "k"}}),
    );
    assert!(update(&old, &new).allowed());
    // The condition alone also means the VM exists; a False condition does not.
    old["status"] = json!({"conditions": [{"type": "VirtualMachineCreated", "status": "False"}]});
    assert!(update(&old, &new).allowed());
    old["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}, {"type": "VirtualMachineCreated", "status": "True"}]});
    assert_eq!(
        fields(&update(&old, &new)),
        ["spec.template", "spec.userDataSecretRef"]
    );
    old["status"] = json!({"virtualMachineRef": ""});
    assert!(update(&old, &new).allowed());
    // Immutability is an UPDATE rule only.
    let verdict = run_with(
        Operation::Create,
        "alice",
        &new,
        Some(&running(json!({"template": "a"}))),
        &PolicySet::default(),
    );
    assert!(verdict.allowed());
}

#[test]
fn timeout_may_change_on_update() {
    let old = running(json!({"timeoutMs": 3_600_000 * 2, "timeoutAction": "Stop"}));
    let longer = desk(
        "alice",
        json!({"timeoutMs": 3_600_000 * 4, "timeoutAction": "Stop"}),
    );
    assert_eq!(update(&old, &longer), Verdict::default());
    let shorter = desk(
        "alice",
        json!({"timeoutMs": 3 * 3_600_000 / 2, "timeoutAction": "Stop"}),
    );
    assert_eq!(
        update(&old, &shorter),
        Verdict::default(),
        "still 30 minutes to go"
    );
}

#[test]
fn shortening_past_the_start_warns() {
    // Started 11:00, now 12:00: a 30-minute lifetime is already over.
    let old = running(json!({"timeoutMs": 7_200_000, "timeoutAction": "Stop"}));
    let new = desk(
        "alice",
        json!({"timeoutMs": 1_800_000, "timeoutAction": "Stop"}),
    );
    let verdict = update(&old, &new);
    assert!(verdict.allowed());
    assert_eq!(verdict.warnings.len(), 1, "{verdict:?}");
    let warning = &verdict.warnings[0];
    assert!(warning.contains("2025-06-01T11:00:00Z"), "{warning}");
    assert!(warning.contains("30m"), "{warning}");
    assert!(warning.contains("time out right away"), "{warning}");
    // Exactly at now counts as over.
    let exact = desk(
        "alice",
        json!({"timeoutMs": 3_600_000, "timeoutAction": "Stop"}),
    );
    assert_eq!(update(&old, &exact).warnings.len(), 1);
    // No start time, or an unreadable one: nothing to say.
    let mut unstarted = old.clone();
    unstarted["status"]["startTime"] = json!("yesterday");
    assert!(update(&unstarted, &new).warnings.is_empty());
    unstarted["status"]["startTime"] = json!(42);
    assert!(update(&unstarted, &new).warnings.is_empty());
    // Extending never warns, even if the session already ran out.
    let long_over = running(json!({"timeoutMs": 1_000, "timeoutAction": "Stop"}));
    assert!(
        update(
            &long_over,
            &desk(
                "alice",
                json!({"timeoutMs": 2_000, "timeoutAction": "Stop"})
            )
        )
        .warnings
        .is_empty()
    );
}

#[test]
fn soft_findings_are_warnings() {
    let old = running(json!({"timeoutMs": 3_600_000}));
    let new = desk("alice", json!({"timeoutMs": 3_600_000}));
    let verdict = update(&old, &new);
    assert!(verdict.allowed());
    assert_eq!(verdict.warnings.len(), 1);
    assert!(
        verdict.warnings[0].contains("spec.timeoutAction is not set"),
        "{:?}",
        verdict.warnings
    );
    // Not on CREATE: the mutating webhook sets it.
    assert!(create(&new).warnings.is_empty());

    let long = create(&desk(
        "a",
        json!({"timeoutMs": 2 * 86_400_000, "timeoutAction": "Stop"}),
    ));
    assert!(long.allowed());
    assert_eq!(long.warnings.len(), 1);
    assert!(long.warnings[0].contains("2d"), "{:?}", long.warnings);
    assert!(
        create(&desk("a", json!({"timeoutMs": 86_400_000})))
            .warnings
            .is_empty()
    );
    // An out-of-range timeout is a violation, not also a warning.
    let over = create(&desk("a", json!({"timeoutMs": 40 * 86_400_000_i64})));
    assert!(over.warnings.is_empty());
    assert_eq!(fields(&over), ["spec.timeoutMs"]);
}

#[test]
fn policies_are_merged_in() {
    let set = PolicySet::load(&[
        (
            "deny.json".into(),
            br#"{"name":"max-timeout-7d","schema":{"properties":{"spec":{"properties":{"timeoutMs":{"maximum":604800000}}}}}}"#.to_vec(),
        ),
        (
            "warn.json".into(),
            br#"{"name":"eight-hours","enforcement":"warn","schema":{"properties":{"spec":{"properties":{"timeoutMs":{"maximum":28800000}}}}}}"#.to_vec(),
        ),
        (
            "team.json".into(),
            br#"{"name":"team-a","match":{"namespaces":["team-a"]},"schema":{"required":["nothing"]}}"#.to_vec(),
        ),
    ])
    .expect("loads");
    let object = desk(
        "Bad",
        json!({"timeoutMs": 604_800_001, "timeoutAction": "Stop"}),
    );
    let verdict = run_with(Operation::Create, "Bad", &object, None, &set);
    assert_eq!(fields(&verdict), ["metadata.name", "spec.timeoutMs"]);
    assert!(message_for(&verdict, "spec.timeoutMs").starts_with("policy \"max-timeout-7d\": "));
    assert_eq!(verdict.warnings.len(), 2, "{:?}", verdict.warnings);
    assert!(
        verdict
            .warnings
            .iter()
            .any(|w| w.contains("longer than 24h"))
    );
    assert!(
        verdict
            .warnings
            .iter()
            .any(|w| w.starts_with("policy \"eight-hours\": spec.timeoutMs: "))
    );

    let ok = desk(
        "a",
        json!({"timeoutMs": 604_800_000, "timeoutAction": "Stop"}),
    );
    assert!(run_with(Operation::Update, "a", &ok, None, &set).allowed());
}

#[test]
fn shipped_policies_judge_the_seven_day_ceiling() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies");
    let set =
        PolicySet::load(&crate::policy::files::load_dir(&dir).expect("reads")).expect("loads");
    let wide = ValidateConfig {
        max_timeout_ms: 365 * 86_400_000,
        ..cfg()
    };
    let judge = |ms: i64| {
        let object = desk("a", json!({"timeoutMs": ms, "timeoutAction": "Stop"}));
        let input = ValidationInput {
            operation: Operation::Create,
            name: "a",
            namespace: "default",
            object: &object,
            old_object: None,
        };
        validate_at(&input, &wide, &set, now())
    };
    let over = judge(604_800_001);
    assert_eq!(fields(&over), ["spec.timeoutMs"]);
    assert!(judge(604_800_000).allowed());
}

#[test]
fn durations_read_naturally() {
    assert_eq!(human_ms(604_800_000), "7d");
    assert_eq!(human_ms(3_600_000), "1h");
    assert_eq!(human_ms(5_400_000), "90m");
    assert_eq!(human_ms(1_000), "1s");
    assert_eq!(human_ms(1_500), "1500ms");
    assert_eq!(human_ms(0), "0ms");
    assert_eq!(human_ms(-2_000), "-2s");
    assert_eq!(human_ms(i64::MIN), format!("{}ms", i64::MIN));
}
