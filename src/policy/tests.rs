use std::path::{Path, PathBuf};

use super::*;
use crate::policy::files::{check_files, load_dir};
use serde_json::json;

fn policy_bytes(doc: Value) -> Vec<u8> {
    serde_json::to_vec(&doc).expect("serializes")
}

fn source(origin: &str, doc: Value) -> (String, Vec<u8>) {
    (origin.to_string(), policy_bytes(doc))
}

fn ceiling(name: &str, max: i64) -> Value {
    json!({
        "name": name,
        "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": max}}}}}
    })
}

fn desk(timeout: i64) -> Value {
    json!({"metadata": {"name": "alice"}, "spec": {"timeoutMs": timeout}})
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn only_error(result: Result<PolicySet, Vec<PolicyError>>) -> PolicyError {
    let mut errors = result.expect_err("load must fail");
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors.remove(0)
}

#[test]
fn shipped_policies_load() {
    let sources = load_dir(&manifest_dir().join("policies")).expect("reads policies/");
    assert!(!sources.is_empty(), "policies/ holds the default policies");
    let set = match PolicySet::load(&sources) {
        Ok(set) => set,
        Err(errors) => panic!("shipped policies must load: {errors:#?}"),
    };
    assert_eq!(set.len(), sources.len());
    assert!(set.names().contains(&"max-timeout-7d"), "{:?}", set.names());
}

#[test]
fn shipped_policies_match_the_configmap_copies() {
    let top = load_dir(&manifest_dir().join("policies")).expect("reads policies/");
    let packed = load_dir(&manifest_dir().join("manifests/base/policies"))
        .expect("reads manifests/base/policies/");
    let names = |v: &[(String, Vec<u8>)]| -> Vec<String> {
        v.iter()
            .map(|(p, _)| {
                Path::new(p)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect()
    };
    assert_eq!(
        names(&top),
        names(&packed),
        "same files in policies/ and manifests/base/policies/"
    );
    for ((a, bytes_a), (b, bytes_b)) in top.iter().zip(&packed) {
        assert!(
            bytes_a == bytes_b,
            "{a} and {b} differ; copy policies/ into manifests/base/policies/"
        );
    }
}

#[test]
fn shipped_ceiling_denies_over_seven_days() {
    let set = PolicySet::load(&load_dir(&manifest_dir().join("policies")).expect("reads"))
        .expect("loads");
    let over = set.evaluate("default", Operation::Create, &desk(604_800_001));
    let denied: Vec<_> = over
        .violations
        .iter()
        .filter(|v| v.message.contains("max-timeout-7d"))
        .collect();
    assert_eq!(denied.len(), 1, "{over:?}");
    assert_eq!(denied[0].field, "spec.timeoutMs");
    assert!(
        denied[0].message.starts_with("policy \"max-timeout-7d\": "),
        "{}",
        denied[0].message
    );
    assert!(
        denied[0].message.contains("604800001"),
        "{}",
        denied[0].message
    );

    let at = set.evaluate("default", Operation::Update, &desk(604_800_000));
    assert!(at.violations.is_empty(), "{at:?}");
}

#[test]
fn ceiling_policy_boundaries() {
    let set = PolicySet::load(&[source("p.json", ceiling("max-timeout-7d", 604_800_000))])
        .expect("loads");
    let out = set.evaluate("ns", Operation::Create, &desk(604_800_001));
    assert_eq!(out.violations.len(), 1);
    assert_eq!(out.violations[0].field, "spec.timeoutMs");
    assert!(out.warnings.is_empty());
    assert!(
        set.evaluate("ns", Operation::Create, &desk(604_800_000))
            .violations
            .is_empty()
    );
    assert!(
        set.evaluate("ns", Operation::Create, &desk(1_000))
            .violations
            .is_empty()
    );
}

#[test]
fn namespaces_and_operations_match() {
    let mut doc = ceiling("team-a-only", 10);
    doc["match"] = json!({"namespaces": ["team-a", "team-b"], "operations": ["UPDATE"]});
    let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
    let object = desk(11);
    assert_eq!(
        set.evaluate("team-a", Operation::Update, &object)
            .violations
            .len(),
        1
    );
    assert_eq!(
        set.evaluate("team-b", Operation::Update, &object)
            .violations
            .len(),
        1
    );
    assert!(
        set.evaluate("team-a", Operation::Create, &object)
            .violations
            .is_empty()
    );
    assert!(
        set.evaluate("team-c", Operation::Update, &object)
            .violations
            .is_empty()
    );
    assert!(
        set.evaluate("", Operation::Update, &object)
            .violations
            .is_empty()
    );

    // Empty lists and an absent or null match mean everything.
    for matcher in [
        json!({"namespaces": [], "operations": []}),
        json!(null),
        json!({}),
    ] {
        let mut doc = ceiling("all", 10);
        doc["match"] = matcher.clone();
        let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
        for op in [Operation::Create, Operation::Update] {
            assert_eq!(
                set.evaluate("anything", op, &object).violations.len(),
                1,
                "{matcher}"
            );
        }
    }
}

#[test]
fn warn_policies_warn_instead_of_deny() {
    let mut doc = ceiling("long-session", 28_800_000);
    doc["enforcement"] = json!("warn");
    let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
    let out = set.evaluate("ns", Operation::Create, &desk(28_800_001));
    assert!(out.violations.is_empty());
    assert_eq!(out.warnings.len(), 1);
    let warning = &out.warnings[0];
    assert!(
        warning.starts_with("policy \"long-session\": spec.timeoutMs: "),
        "{warning}"
    );
    assert!(warning.contains("28800001"), "{warning}");
    assert!(
        set.evaluate("ns", Operation::Create, &desk(28_800_000))
            .warnings
            .is_empty()
    );
}

#[test]
fn enforcement_defaults_to_deny_and_is_strict() {
    let set = PolicySet::load(&[source("p.json", ceiling("c", 1))]).expect("loads");
    assert_eq!(set.policies()[0].enforcement(), Enforcement::Deny);

    let mut doc = ceiling("c", 1);
    doc["enforcement"] = json!("Warn");
    let err = only_error(PolicySet::load(&[source("p.json", doc)]));
    assert!(
        err.to_string()
            .starts_with("policy \"c\" (p.json): not a valid policy document"),
        "{err}"
    );
}

#[test]
fn broken_json_names_the_file() {
    let err = only_error(PolicySet::load(&[(
        "policies/bad.json".into(),
        b"{\"name\": ".to_vec(),
    )]));
    assert!(err.name.is_none());
    let text = err.to_string();
    assert!(
        text.starts_with("policy from policies/bad.json: not valid JSON"),
        "{text}"
    );
}

#[test]
fn missing_or_empty_name_is_refused() {
    for doc in [
        json!({"schema": true}),
        json!({"name": null, "schema": true}),
        json!({"name": "  ", "schema": true}),
        json!({"name": 7, "schema": true}),
        json!({"name": "x".repeat(300), "schema": true}),
    ] {
        let err = only_error(PolicySet::load(&[source("cm:nameless.json", doc.clone())]));
        let text = err.to_string();
        assert!(
            text.starts_with("policy from cm:nameless.json: "),
            "{doc}: {text}"
        );
        assert!(text.contains("name"), "{text}");
        assert!(text.len() < 300, "the long name is not echoed: {text}");
    }
}

#[test]
fn document_shape_errors_name_the_policy() {
    let cases = [
        (
            json!([1, 2]),
            "policy from p.json: not a valid policy document",
        ),
        (
            json!({"name": "n"}),
            "policy \"n\" (p.json): not a valid policy document: missing field `schema`",
        ),
        (
            json!({"name": "n", "schema": true, "enforcment": "warn"}),
            "unknown field `enforcment`",
        ),
        (
            json!({"name": "n", "schema": true, "match": {"namespace": ["a"]}}),
            "unknown field `namespace`",
        ),
        (
            json!({"name": "n", "schema": true, "match": {"operations": ["DELETE"]}}),
            "match.operations: unknown operation \"DELETE\"",
        ),
        (
            json!({"name": "n", "schema": true, "match": {"operations": "CREATE"}}),
            "not a valid policy document",
        ),
        (
            json!({"name": "n", "schema": true, "match": {"namespaces": [""]}}),
            "match.namespaces: contains an empty",
        ),
        (
            json!({"name": "n", "schema": true, "description": 5}),
            "not a valid policy document",
        ),
    ];
    for (doc, expected) in cases {
        let err = only_error(PolicySet::load(&[source("p.json", doc.clone())]));
        let text = err.to_string();
        assert!(text.contains(expected), "{doc}: {text}");
    }
}

#[test]
fn schema_that_does_not_compile_is_refused() {
    for schema in [
        json!({"type": 5}),
        json!({"maximum": "ten"}),
        json!({"pattern": "(unclosed"}),
        json!(null),
    ] {
        let err = only_error(PolicySet::load(&[source(
            "policies/max-timeout.json",
            json!({"name": "max-timeout-7d", "schema": schema.clone()}),
        )]));
        let text = err.to_string();
        assert!(
            text.starts_with(
                "policy \"max-timeout-7d\" (policies/max-timeout.json): schema does not compile: "
            ),
            "{schema}: {text}"
        );
        assert!(matches!(err.reason, PolicyErrorReason::Schema(_)));
    }
}

#[test]
fn remote_refs_are_refused_not_fetched() {
    for reference in [
        "https://example.invalid/schema.json",
        "http://127.0.0.1:9/schema.json",
        "file:///etc/passwd",
        "other.json#/$defs/x",
    ] {
        let doc = json!({"name": "remote", "schema": {"$ref": reference}});
        let err = only_error(PolicySet::load(&[source("p.json", doc)]));
        let text = err.to_string();
        assert!(
            text.starts_with("policy \"remote\" (p.json): schema does not compile: "),
            "{text}"
        );
        assert!(
            matches!(err.reason, PolicyErrorReason::Schema(_)),
            "{reference}"
        );
    }
    // The refusal explains itself for an absolute URL.
    let doc = json!({"name": "remote", "schema": {"$ref": "https://example.invalid/s.json"}});
    let err = only_error(PolicySet::load(&[source("p.json", doc)]));
    assert!(err.to_string().contains("not allowed"), "{err}");

    // Local references work.
    let doc = json!({
        "name": "local",
        "schema": {"$defs": {"t": {"maximum": 5}}, "properties": {"spec": {"properties": {"timeoutMs": {"$ref": "#/$defs/t"}}}}}
    });
    let set = PolicySet::load(&[source("p.json", doc)]).expect("local $ref compiles");
    assert_eq!(
        set.evaluate("ns", Operation::Create, &desk(6))
            .violations
            .len(),
        1
    );
}

#[test]
fn duplicate_names_are_refused_with_both_origins() {
    let err = only_error(PolicySet::load(&[
        source("a.json", ceiling("same", 1)),
        source("cm:b.json", ceiling("same", 2)),
    ]));
    let text = err.to_string();
    assert!(text.starts_with("policy \"same\" (cm:b.json): "), "{text}");
    assert!(text.contains("a.json"), "{text}");
}

#[test]
fn every_broken_policy_is_reported_and_nothing_loads() {
    let result = PolicySet::load(&[
        source("good.json", ceiling("good", 1)),
        ("bad.json".into(), b"nope".to_vec()),
        source("nameless.json", json!({"schema": true})),
        source("dup.json", ceiling("good", 2)),
    ]);
    let errors = result.expect_err("fails");
    assert_eq!(errors.len(), 3, "{errors:?}");
    let origins: Vec<&str> = errors.iter().map(|e| e.origin.as_str()).collect();
    assert_eq!(origins, ["bad.json", "nameless.json", "dup.json"]);
}

#[test]
fn empty_set_allows_everything() {
    let set = PolicySet::load(&[]).expect("loads");
    assert!(set.is_empty());
    assert_eq!(
        set.evaluate("ns", Operation::Create, &json!(null)),
        PolicyOutcome::default()
    );
}

#[test]
fn field_paths_read_like_kubectl() {
    let object = json!({
        "spec": {"timeoutMs": 1, "list": [{"a": 1}, {"b": [5, 6]}], "0": {"x": 1}},
        "metadata": {"labels": {"app.kubernetes.io/name": "x", "a~b": 1}}
    });
    let cases = [
        ("", ""),
        ("/spec", "spec"),
        ("/spec/timeoutMs", "spec.timeoutMs"),
        ("/spec/list/0", "spec.list[0]"),
        ("/spec/list/1/b/1", "spec.list[1].b[1]"),
        ("/spec/0/x", "spec.0.x"),
        (
            "/metadata/labels/app.kubernetes.io~1name",
            "metadata.labels[app.kubernetes.io/name]",
        ),
        ("/metadata/labels/a~0b", "metadata.labels[a~b]"),
        ("/nope/3", "nope.3"),
    ];
    for (pointer, expected) in cases {
        assert_eq!(field_path(pointer, &object), expected, "{pointer}");
    }
    assert_eq!(field_path("/0/a", &json!([{"a": 1}])), "[0].a");
    assert!(
        field_path(&format!("/{}", "k".repeat(5000)), &json!({}))
            .chars()
            .count()
            <= MAX_FIELD_CHARS + 1
    );
}

#[test]
fn findings_are_capped_and_short() {
    let doc = json!({
        "name": "strict",
        "schema": {"properties": {"spec": {"additionalProperties": {"type": "string"}}}}
    });
    let set = PolicySet::load(&[source("p.json", doc)]).expect("loads");
    let mut spec = serde_json::Map::new();
    for i in 0..500 {
        spec.insert(format!("k{i}"), json!(vec![i; 1000]));
    }
    let out = set.evaluate("ns", Operation::Create, &json!({"spec": spec}));
    assert_eq!(out.violations.len(), MAX_FINDINGS_PER_POLICY + 1);
    assert!(
        out.violations
            .last()
            .is_some_and(|v| v.message.contains("more than 20 findings"))
    );
    for v in &out.violations {
        assert!(v.message.chars().count() < 300, "{}", v.message);
    }
}

#[test]
fn deep_and_huge_objects_do_not_panic() {
    let set = PolicySet::load(&load_dir(&manifest_dir().join("policies")).expect("reads"))
        .expect("loads");
    // As deep as serde_json lets a request body be.
    let mut deep = json!(1);
    for _ in 0..120 {
        deep = json!({"spec": [deep]});
    }
    assert_short(&set.evaluate("team-a", Operation::Create, &deep), &deep);
    let huge =
        json!({"spec": {"timeoutMs": "x".repeat(5_000_000), "template": "y".repeat(1_000_000)}});
    assert_short(
        &set.evaluate("team-a", Operation::Create, &huge),
        &json!("huge"),
    );
    for object in [
        json!(null),
        json!([]),
        json!("spec"),
        json!({"spec": null}),
        json!({"spec": {"timeoutMs": 1e308}}),
    ] {
        // Not a desk: whatever the policies say, each answer is a bounded message.
        assert_short(&set.evaluate("team-a", Operation::Update, &object), &object);
    }
}

/// Every violation and warning of `out` is a short message.
fn assert_short(out: &PolicyOutcome, object: &Value) {
    let texts = out
        .violations
        .iter()
        .map(|v| &v.message)
        .chain(&out.warnings);
    for text in texts {
        assert!(text.len() < 1_000, "{object}: {} bytes", text.len());
    }
}

#[test]
fn store_swaps_whole_sets() {
    let store = PolicyStore::default();
    assert!(store.current().is_empty());
    let before = store.current();
    let clone = store.clone();
    clone.replace(PolicySet::load(&[source("p.json", ceiling("c", 1))]).expect("loads"));
    assert_eq!(store.current().names(), ["c"]);
    assert!(before.is_empty(), "a snapshot taken earlier is unaffected");
}

#[test]
fn store_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyStore>();
    assert_send_sync::<PolicySet>();
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cyberdesk-policy-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates temp dir");
    dir
}

#[test]
fn load_dir_reads_sorted_json_files_only() {
    let dir = temp_dir("load");
    std::fs::write(dir.join("b.json"), "{}").expect("write");
    std::fs::write(dir.join("a.json"), "[]").expect("write");
    std::fs::write(dir.join("notes.txt"), "x").expect("write");
    std::fs::write(dir.join(".hidden.json"), "x").expect("write");
    std::fs::create_dir_all(dir.join("sub.json")).expect("mkdir");
    let found = load_dir(&dir).expect("reads");
    let names: Vec<String> = found
        .iter()
        .map(|(p, _)| {
            Path::new(p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(names, ["a.json", "b.json"]);
    assert_eq!(found[0].1, b"[]");
    assert!(
        load_dir(&dir.join("missing"))
            .expect("missing is fine")
            .is_empty()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_files_reports_ok_lines_and_every_error() {
    let dir = temp_dir("check");
    let good = dir.join("good.json");
    let bad = dir.join("bad.json");
    std::fs::write(&good, policy_bytes(ceiling("good", 5))).expect("write");
    std::fs::write(&bad, br#"{"name": "bad", "schema": {"type": 1}}"#).expect("write");

    let lines = check_files(std::slice::from_ref(&good)).expect("good file checks");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("policy \"good\" ok"), "{}", lines[0]);
    assert!(lines[0].contains("enforcement deny"), "{}", lines[0]);

    let errors =
        check_files(&[good.clone(), bad.clone(), dir.join("absent.json")]).expect_err("fails");
    assert_eq!(errors.len(), 2, "{errors:?}");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("absent.json") && t.contains("cannot read it")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("policy \"bad\"") && t.contains("schema does not compile")),
        "{text:?}"
    );

    // A folder stands for its policies.
    std::fs::remove_file(&bad).expect("rm");
    assert_eq!(
        check_files(std::slice::from_ref(&dir))
            .expect("folder checks")
            .len(),
        1
    );
    let shipped = check_files(&[manifest_dir().join("policies")]).expect("shipped policies check");
    assert!(shipped.iter().any(|l| l.contains("max-timeout-7d")));
    let _ = std::fs::remove_dir_all(&dir);
}

fn pool(spec: Value) -> Value {
    json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool",
           "metadata": {"name": "warm"}, "spec": spec})
}

#[test]
fn shipped_policies_bind_pools_as_the_desks_they_serve() {
    let set = PolicySet::load(&load_dir(&manifest_dir().join("policies")).expect("reads"))
        .expect("loads");
    // An unclaimed VM may not outlive the desks' ceiling: the finding names maxIdleMs.
    let long = set.evaluate_pool(
        "default",
        Operation::Create,
        &pool(json!({"size": 1, "maxIdleMs": 604_800_001_i64})),
    );
    let fields: Vec<&str> = long.violations.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(fields, ["spec.maxIdleMs"], "{long:?}");
    assert!(long.violations[0].message.contains("max-timeout-7d"));
    assert!(
        long.warnings
            .iter()
            .any(|w| w.contains("spec.maxIdleMs") && w.contains("long-session-warning-8h")),
        "{long:?}"
    );
    // The default lifetime passes every shipped policy.
    let default = set.evaluate_pool("default", Operation::Create, &pool(json!({"size": 1})));
    assert_eq!(default, PolicyOutcome::default());
    // A namespace's template list binds its pools too.
    let gpu = set.evaluate_pool(
        "team-a",
        Operation::Create,
        &pool(json!({"size": 1, "template": "other"})),
    );
    assert_eq!(gpu.violations.len(), 1, "{gpu:?}");
    assert_eq!(gpu.violations[0].field, "spec.template");
    assert!(gpu.violations[0].message.contains("team-a-templates"));
}

#[test]
fn match_kinds_narrows_a_policy() {
    let desks_only = json!({"name": "desks-only", "match": {"kinds": ["Cyberdesk"]},
        "schema": {"properties": {"spec": {"required": ["timeoutAction"]}}}});
    let pools_only = json!({"name": "pools-only", "match": {"kinds": ["CyberdeskPool"]},
        "schema": {"properties": {"spec": {"properties": {"size": {"maximum": 3}}}}}});
    let set = PolicySet::load(&[source("a", desks_only), source("b", pools_only)]).expect("loads");
    let p = pool(json!({"size": 5}));
    let pooled = set.evaluate_pool("ns", Operation::Create, &p);
    assert_eq!(pooled.violations.len(), 1, "{pooled:?}");
    assert!(pooled.violations[0].message.contains("pools-only"));
    let desk = set.evaluate("ns", Operation::Create, &json!({"spec": {"size": 5}}));
    assert_eq!(desk.violations.len(), 1, "{desk:?}");
    assert!(desk.violations[0].message.contains("desks-only"));
    let bad = only_error(PolicySet::load(&[source(
        "c",
        json!({"name": "c", "match": {"kinds": ["Pod"]}, "schema": {}}),
    )]));
    assert!(bad.to_string().contains("match.kinds"), "{bad}");
    assert!(bad.to_string().contains("\"Pod\""), "{bad}");
}

#[test]
fn a_pool_is_judged_with_the_desk_fields_it_stands_for() {
    let subject = pool_subject(&pool(json!({"size": 1})));
    assert_eq!(
        subject["spec"]["timeoutMs"],
        json!(crate::model::pool::DEFAULT_MAX_IDLE_MS)
    );
    assert_eq!(subject["spec"]["timeoutAction"], "Delete");
    assert_eq!(subject["kind"], "CyberdeskPool");
    let set = pool_subject(&pool(json!({"size": 1, "maxIdleMs": 60000})));
    assert_eq!(set["spec"]["timeoutMs"], 60000);
    assert_eq!(pool_field("spec.timeoutMs".into()), "spec.maxIdleMs");
    assert_eq!(pool_field("spec.timeoutMsX".into()), "spec.timeoutMsX");
    assert_eq!(pool_field("spec.template".into()), "spec.template");
}
