//! Handler tests: the webhook router driven with crafted AdmissionReviews — good, bad and
//! hostile. Every one gets a clear answer; none panics.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::ConfigMap;

use crate::admission::Admission;
use crate::admission::authz::{Access, AccessError, NoAccessReviews, SecretAccess};
use crate::admission::mutate::MutateConfig;
use crate::admission::validate::ValidateConfig;
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::policy::{PolicySet, PolicyStore};
use crate::server::{MAX_BODY_BYTES, router};

/// Answers from a fixed list: only the Secrets (and pools) named in `readable` may be read
/// (used), by anyone.
struct ReadableSecrets(&'static [&'static str]);

impl SecretAccess for ReadableSecrets {
    fn may_get_secret<'a>(
        &'a self,
        _who: &'a UserInfo,
        _namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>> {
        let access = if self.0.contains(&name) {
            Access::Allowed
        } else {
            Access::Denied(String::new())
        };
        Box::pin(async move { Ok(access) })
    }

    fn may_use_pool<'a>(
        &'a self,
        who: &'a UserInfo,
        namespace: &'a str,
        pool: &'a str,
    ) -> BoxFuture<'a, Result<Access, AccessError>> {
        self.may_get_secret(who, namespace, pool)
    }
}

fn app_with(policies: PolicyStore) -> Router {
    app_full(policies, Arc::new(ReadableSecrets(&["readable"])), vec![])
}

fn app_full(
    policies: PolicyStore,
    secret_access: Arc<dyn SecretAccess>,
    templates: Vec<ConfigMap>,
) -> Router {
    router(Arc::new(Admission {
        mutate: MutateConfig {
            default_timeout_ms: 3_600_000,
        },
        validate: ValidateConfig {
            min_timeout_ms: 1_000,
            max_timeout_ms: 30 * 86_400_000,
            vm_name_prefix: crate::model::names::VM_PREFIX.into(),
        },
        scope: crate::admission::scope::ScopeConfig::default(),
        policies,
        metrics: Metrics::new("test", &[]).expect("metrics"),
        templates: Catalog::fixed("cyberdesk-system", "cyberdesk-vm-template", templates),
        secret_access,
        operator_username: "system:serviceaccount:cyberdesk-system:cyberdesk-operator".into(),
    }))
}

fn app() -> Router {
    app_with(PolicyStore::default())
}

async fn post(app: Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let resp = app
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(body.into())
                .expect("request"),
        )
        .await
        .expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn review(operation: &str, object: Value, old: Value) -> Value {
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(json!(""));
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "11111111-2222-3333-4444-555555555555",
            "kind": {"group": "cyberdesk.io", "version": "v1alpha1", "kind": "Cyberdesk"},
            "resource": {"group": "cyberdesk.io", "version": "v1alpha1", "resource": "cyberdesks"},
            "name": name, "namespace": "team-a", "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object, "oldObject": old, "dryRun": false
        }
    })
}

fn desk(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
           "metadata": {"name": name, "namespace": "team-a"}, "spec": spec})
}

fn response(v: &Value) -> &Value {
    &v["response"]
}

#[tokio::test]
async fn mutate_defaults_and_adds_the_finalizer() {
    let (status, body) = post(
        app(),
        "/mutate",
        review("CREATE", desk("alice", json!({})), Value::Null).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = response(&body);
    assert_eq!(r["uid"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let patch = patch_bytes(&r["patch"]);
    let text = String::from_utf8(patch).expect("utf-8");
    assert!(
        text.contains("/spec/timeoutMs") && text.contains("3600000"),
        "{text}"
    );
    assert!(text.contains("cyberdesk.io/vm-cleanup"), "{text}");
}

/// kube serializes the patch bytes as a JSON array (Go's decoder accepts that as well as
/// base64); accept both here.
fn patch_bytes(v: &Value) -> Vec<u8> {
    use base64::Engine;
    match v {
        Value::String(s) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
        other => panic!("patch must be a base64 string (bytes in JSON), got: {other}"),
    }
}

#[tokio::test]
async fn mutate_leaves_complete_objects_alone() {
    let mut obj = desk("alice", json!({"timeoutMs": 5000, "timeoutAction": "Stop"}));
    obj["metadata"]["finalizers"] = json!(["cyberdesk.io/vm-cleanup"]);
    let (status, body) = post(
        app(),
        "/mutate",
        review("CREATE", obj, Value::Null).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response(&body)["allowed"], true);
    assert!(response(&body).get("patch").is_none());
}

#[tokio::test]
async fn validate_reports_every_violation_with_its_field() {
    let obj = desk(
        "Bad_Name",
        json!({"timeoutMs": 10, "timeoutAction": "Explode"}),
    );
    let (status, body) = post(
        app(),
        "/validate",
        review("CREATE", obj, Value::Null).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    assert_eq!(r["status"]["reason"], "Invalid");
    let fields: Vec<&str> = r["status"]["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    for wanted in ["metadata.name", "spec.timeoutMs", "spec.timeoutAction"] {
        assert!(fields.contains(&wanted), "{wanted} missing from {fields:?}");
    }
    assert!(r["status"]["details"]["causes"][0]["reason"] == "FieldValueInvalid");
}

#[tokio::test]
async fn validate_admits_a_good_desk() {
    let obj = desk(
        "alice",
        json!({"timeoutMs": 60000, "timeoutAction": "Delete"}),
    );
    let (_, body) = post(
        app(),
        "/validate",
        review("CREATE", obj, Value::Null).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
}

#[tokio::test]
async fn policies_deny_through_the_handler() {
    let policy = json!({"name": "max-1h", "enforcement": "deny",
        "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": 3600000}}}}}});
    let set = PolicySet::load(&[("test".into(), policy.to_string().into_bytes())]).expect("loads");
    let app = app_with(PolicyStore::new(set));
    let obj = desk("alice", json!({"timeoutMs": 7200000}));
    let (_, body) = post(
        app,
        "/validate",
        review("CREATE", obj, Value::Null).to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max-1h"),
        "{body}"
    );
}

#[tokio::test]
async fn metadata_only_updates_are_never_blocked() {
    // Finalizer removal during deletion must pass even if the spec now breaks a rule.
    let old = desk("alice", json!({"timeoutMs": 10}));
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!([]);
    let (_, body) = post(app(), "/validate", review("UPDATE", new, old).to_string()).await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
}

#[tokio::test]
async fn immutable_fields_are_enforced_once_the_vm_exists() {
    let mut old = desk("alice", json!({"timeoutMs": 60000, "template": "a"}));
    old["status"] = json!({"virtualMachineRef": "cyberdesk-alice"});
    let new = desk("alice", json!({"timeoutMs": 60000, "template": "b"}));
    let (_, body) = post(app(), "/validate", review("UPDATE", new, old).to_string()).await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert_eq!(
        r["status"]["details"]["causes"][0]["field"],
        "spec.template"
    );
}

#[tokio::test]
async fn hostile_envelopes_get_400_with_a_reason() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", Vec::new()),
        ("not JSON", b"<xml/>".to_vec()),
        (
            "wrong apiVersion",
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#
                .to_vec(),
        ),
        (
            "wrong kind",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"Pod"}"#.to_vec(),
        ),
        (
            "missing request",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
        ),
        (
            "request not an object",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":[]}"#
                .to_vec(),
        ),
        ("JSON array", b"[1,2,3]".to_vec()),
    ];
    for (what, body) in cases {
        let (status, answer) = post(app(), "/validate", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        assert!(
            answer["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {answer}"
        );
    }
}

#[tokio::test]
async fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _) = post(app(), "/mutate", deep).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let mut spec = json!(1);
    for _ in 0..100 {
        spec = json!({"a": spec});
    }
    // The apiserver prunes unknown fields before admission; here only a clean answer counts.
    let (status, body) = post(
        app(),
        "/validate",
        review("CREATE", desk("alice", spec), Value::Null).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        response(&body)["uid"],
        "11111111-2222-3333-4444-555555555555"
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let (status, _) = post(app(), "/validate", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn unreadable_requests_are_denied_with_their_uid() {
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-42", "operation": "CREATE", "object": "not an object"}});
    let (status, answer) = post(app(), "/validate", body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response(&answer)["uid"], "u-42");
    assert_eq!(response(&answer)["allowed"], false);
}

#[tokio::test]
async fn wrong_spec_types_and_hostile_names_are_violations() {
    let specs = [
        json!([]),
        json!("spec"),
        json!(null),
        json!({"timeoutMs": "soon"}),
        json!({"timeoutMs": 1.5}),
        json!({"timeoutMs": -1}),
        json!({"timeoutMs": 1e300}),
        json!({"userDataSecretRef": "s"}),
    ];
    for spec in specs {
        let (status, body) = post(
            app(),
            "/validate",
            review("CREATE", desk("alice", spec.clone()), Value::Null).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{spec}");
        assert_eq!(response(&body)["allowed"], false, "{spec} admitted: {body}");
    }
    for name in [
        "x".repeat(10_000),
        "désktop".to_string(),
        "UPPER".into(),
        "-dash".into(),
        "a.b".into(),
        String::new(),
    ] {
        let (status, body) = post(
            app(),
            "/validate",
            review("CREATE", desk(&name, json!({})), Value::Null).to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let r = response(&body);
        assert_eq!(r["allowed"], false, "name {name:?} admitted");
        assert!(
            r["status"]["message"].as_str().unwrap_or("").len() < 2_000,
            "echoed a huge name back"
        );
    }
}

#[tokio::test]
async fn duplicate_keys_get_a_clear_answer() {
    let text = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","kind":"AdmissionReview",
        "request":{"uid":"u-7","kind":{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"},
        "resource":{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"},"name":"a","namespace":"n",
        "operation":"CREATE","userInfo":{},"object":{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk",
        "metadata":{"name":"a"},"spec":{"timeoutMs":5000,"timeoutMs":10}}}}"#;
    let (status, body) = post(app(), "/validate", text).await;
    // Either a 400 with a reason or a review carrying the uid; never a panic or a hang.
    match status {
        StatusCode::BAD_REQUEST => assert!(body["error"].is_string()),
        StatusCode::OK => assert_eq!(response(&body)["uid"], "u-7"),
        other => panic!("unexpected status {other}"),
    }
}

#[tokio::test]
async fn other_kinds_are_refused() {
    let mut r = review(
        "CREATE",
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
        Value::Null,
    );
    r["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
    let (_, body) = post(app(), "/validate", r.to_string()).await;
    assert_eq!(response(&body)["allowed"], false);
}

fn template_configmap(name: &str, allowed: Option<&str>) -> ConfigMap {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"cyberdesk.io/template": "true"}},
        "data": {"template.yaml": "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nspec: {template: {spec: {volumes: [{name: c, cloudInitNoCloud: {secretRef: {name: '${user_data_secret_name}'}}}]}}}\n"},
    });
    if let Some(a) = allowed {
        v["metadata"]["annotations"] = json!({"cyberdesk.io/allowed-namespaces": a});
    }
    serde_json::from_value(v).expect("configmap")
}

fn causes(r: &Value) -> Vec<(String, String)> {
    r["status"]["details"]["causes"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or("").to_string(),
                        c["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_secret_the_requester_may_not_read_is_denied_on_its_field() {
    let secret = |name: &str| json!({"userDataSecretRef": {"name": name, "key": "userdata"}});
    let (status, body) = post(
        app(),
        "/validate",
        review("CREATE", desk("alice", secret("creds")), Value::Null).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    let found = causes(r);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "spec.userDataSecretRef.name");
    assert!(
        found[0].1.contains("\"creds\"") && found[0].1.contains("alice"),
        "{found:?}"
    );

    let (_, body) = post(
        app(),
        "/validate",
        review("CREATE", desk("alice", secret("readable")), Value::Null).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");

    // Changing the reference later is checked again; an unrelated change is not.
    let old = desk("alice", secret("readable"));
    let (_, body) = post(
        app(),
        "/validate",
        review("UPDATE", desk("alice", secret("creds")), old.clone()).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], false, "{body}");
    let mut longer = secret("readable");
    longer["timeoutMs"] = json!(7_200_000);
    let (_, body) = post(
        app_full(PolicyStore::default(), Arc::new(NoAccessReviews), vec![]),
        "/validate",
        review("UPDATE", desk("alice", longer), old).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
}

#[tokio::test]
async fn no_access_review_means_no_admission() {
    let spec = json!({"userDataSecretRef": {"name": "readable", "key": "userdata"}});
    let (_, body) = post(
        app_full(PolicyStore::default(), Arc::new(NoAccessReviews), vec![]),
        "/validate",
        review("CREATE", desk("alice", spec), Value::Null).to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert!(causes(r)[0].1.contains("could not check"), "{r}");
}

#[tokio::test]
async fn templates_must_exist_and_be_allowed_here() {
    let templates = vec![
        template_configmap("team-a-only", Some("team-a")),
        template_configmap("team-b-only", Some("team-b")),
    ];
    let app = || {
        app_full(
            PolicyStore::default(),
            Arc::new(ReadableSecrets(&["readable"])),
            templates.clone(),
        )
    };
    let verdict = |template: &str, key: &str| {
        let spec =
            json!({"template": template, "userDataSecretRef": {"name": "readable", "key": key}});
        review("CREATE", desk("alice", spec), Value::Null).to_string()
    };
    let (_, body) = post(app(), "/validate", verdict("team-a-only", "userdata")).await;
    assert_eq!(response(&body)["allowed"], true, "{body}");

    let (_, body) = post(app(), "/validate", verdict("team-b-only", "userdata")).await;
    let found = causes(response(&body));
    assert_eq!(found[0].0, "spec.template", "{found:?}");
    assert!(
        found[0].1.contains("may not be used in namespace"),
        "{found:?}"
    );

    let (_, body) = post(app(), "/validate", verdict("missing", "userdata")).await;
    assert_eq!(causes(response(&body))[0].0, "spec.template");

    // The template passes the Secret by reference: KubeVirt reads only userdata/userData.
    let (_, body) = post(app(), "/validate", verdict("team-a-only", "cloud-init")).await;
    let found = causes(response(&body));
    assert_eq!(found[0].0, "spec.userDataSecretRef.key", "{found:?}");
}

/// The raw bytes of a response, read as the AdmissionReview API defines it, not through our
/// own types.
async fn raw(app: Router, path: &str, body: String) -> Value {
    let resp = app
        .oneshot(
            Request::post(path)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .expect("body");
    serde_json::from_slice(&bytes).expect("a JSON document")
}

#[tokio::test]
async fn mutate_responses_are_exact_to_the_api() {
    let v = raw(
        app(),
        "/mutate",
        review("CREATE", desk("alice", json!({})), Value::Null).to_string(),
    )
    .await;
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let r = &v["response"];
    assert_eq!(r["uid"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let Value::String(encoded) = &r["patch"] else {
        panic!("patch is not a base64 string: {}", r["patch"]);
    };
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("valid base64");
    let ops: Value = serde_json::from_slice(&decoded).expect("a JSON Patch");
    assert_eq!(
        ops,
        json!([
            {"op": "add", "path": "/spec/timeoutMs", "value": 3_600_000},
            {"op": "add", "path": "/spec/timeoutAction", "value": "Delete"},
            {"op": "add", "path": "/metadata/finalizers", "value": ["cyberdesk.io/vm-cleanup"]},
        ])
    );

    // Nothing to default: no patch and no patchType, uid still echoed.
    let complete = desk("bob", json!({"timeoutMs": 60_000, "timeoutAction": "Stop"}));
    let mut complete = complete;
    complete["metadata"]["finalizers"] = json!(["cyberdesk.io/vm-cleanup"]);
    let v = raw(
        app(),
        "/mutate",
        review("CREATE", complete, Value::Null).to_string(),
    )
    .await;
    let r = &v["response"];
    assert_eq!(r["uid"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(r["allowed"], true);
    assert!(
        r.get("patch").is_none() && r.get("patchType").is_none(),
        "{r}"
    );
}

#[tokio::test]
async fn denials_carry_the_api_status_shape() {
    let v = raw(
        app(),
        "/validate",
        review(
            "CREATE",
            desk("alice", json!({"timeoutMs": "1h"})),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    let r = &v["response"];
    assert_eq!(r["uid"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(r["allowed"], false);
    assert!(r.get("patchType").is_none());
    let status = &r["status"];
    assert_eq!(status["code"], 422);
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["status"], "Failure");
    let causes = status["details"]["causes"].as_array().expect("causes");
    assert!(causes.iter().all(|c| c["reason"] == "FieldValueInvalid"
        && c["field"].as_str().is_some_and(|f| !f.is_empty())
        && c["message"].as_str().is_some_and(|m| !m.is_empty())));
}

#[tokio::test]
async fn an_update_that_changes_the_secret_fails_closed_too() {
    let app = || app_full(PolicyStore::default(), Arc::new(NoAccessReviews), vec![]);
    let old = desk(
        "alice",
        json!({"timeoutMs": 60000, "userDataSecretRef": {"name": "first", "key": "userdata"}}),
    );
    let new = desk(
        "alice",
        json!({"timeoutMs": 60000, "userDataSecretRef": {"name": "second", "key": "userdata"}}),
    );
    let (_, body) = post(
        app(),
        "/validate",
        review("UPDATE", new, old.clone()).to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false, "{r}");
    let causes = causes(r);
    assert_eq!(causes[0].0, "spec.userDataSecretRef.name", "{r}");
    assert!(causes[0].1.contains("could not check"), "{r}");

    // The same Secret as before needs no new review: a longer timeout passes.
    let longer = desk(
        "alice",
        json!({"timeoutMs": 120000, "userDataSecretRef": {"name": "first", "key": "userdata"}}),
    );
    let (_, body) = post(
        app(),
        "/validate",
        review("UPDATE", longer, old).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
}

#[tokio::test]
async fn dry_run_gets_the_same_answer_as_a_real_request() {
    let secret = |name: &str| json!({"userDataSecretRef": {"name": name, "key": "userdata"}});
    let cases = [
        (
            "/mutate",
            review("CREATE", desk("alice", json!({})), Value::Null),
        ),
        (
            "/validate",
            review(
                "CREATE",
                desk("alice", json!({"timeoutMs": 60000})),
                Value::Null,
            ),
        ),
        (
            "/validate",
            review(
                "CREATE",
                desk(&"d".repeat(60), json!({"timeoutMs": 5})),
                Value::Null,
            ),
        ),
        (
            "/validate",
            review("CREATE", desk("alice", secret("readable")), Value::Null),
        ),
        (
            "/validate",
            review("CREATE", desk("alice", secret("hidden")), Value::Null),
        ),
        (
            "/validate",
            review(
                "UPDATE",
                desk("alice", secret("hidden")),
                desk("alice", secret("readable")),
            ),
        ),
    ];
    for (path, real) in cases {
        let mut dry = real.clone();
        dry["request"]["dryRun"] = json!(true);
        let (real_status, real_body) = post(app(), path, real.to_string()).await;
        let (dry_status, dry_body) = post(app(), path, dry.to_string()).await;
        assert_eq!(real_status, dry_status, "{path} {real}");
        assert_eq!(real_body, dry_body, "{path} {real}");
        assert!(real_body["response"].is_object(), "{real_body}");
    }
}

fn pool_review(operation: &str, object: Value, old: Value) -> Value {
    let mut r = review(operation, object, old);
    r["request"]["kind"]["kind"] = json!("CyberdeskPool");
    r["request"]["resource"]["resource"] = json!("cyberdeskpools");
    r
}

fn pool(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool",
           "metadata": {"name": name, "namespace": "team-a"}, "spec": spec})
}

#[tokio::test]
async fn a_pooled_desk_needs_use_on_its_pool() {
    let (_, body) = post(
        app(),
        "/validate",
        review(
            "CREATE",
            desk("alice", json!({"pool": "warm"})),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false, "{body}");
    let found = causes(r);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, "spec.pool");
    assert!(
        found[0].1.contains("may not use CyberdeskPool \"warm\""),
        "{found:?}"
    );
    let (_, body) = post(
        app(),
        "/validate",
        review(
            "CREATE",
            desk("alice", json!({"pool": "readable"})),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
    // No apiserver to ask: refused.
    let (_, body) = post(
        app_full(PolicyStore::default(), Arc::new(NoAccessReviews), vec![]),
        "/validate",
        review(
            "CREATE",
            desk("alice", json!({"pool": "readable"})),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false, "{body}");
    assert!(causes(r)[0].1.contains("could not check"), "{r}");
}

#[tokio::test]
async fn policies_judge_pools_on_create_and_on_metadata_updates() {
    let policy = json!({"name": "max-1h", "enforcement": "deny",
        "schema": {"properties": {"spec": {"properties": {"timeoutMs": {"maximum": 3600000}}}}}});
    let set = PolicySet::load(&[("test".into(), policy.to_string().into_bytes())]).expect("loads");
    let store = PolicyStore::new(set);
    let (_, body) = post(
        app_with(store.clone()),
        "/validate",
        pool_review("CREATE", pool("warm", json!({"size": 1})), Value::Null).to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false, "{body}");
    assert_eq!(causes(r)[0].0, "spec.maxIdleMs", "{body}");
    assert_eq!(r["status"]["details"]["kind"], "cyberdeskpools", "{body}");
    let old = pool("warm", json!({"size": 1}));
    let mut labelled = old.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    let (_, body) = post(
        app_with(store.clone()),
        "/validate",
        pool_review("UPDATE", labelled, old).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], false, "{body}");
    let (_, body) = post(
        app_with(store),
        "/validate",
        pool_review(
            "CREATE",
            pool("warm", json!({"size": 1, "maxIdleMs": 600000})),
            Value::Null,
        )
        .to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true, "{body}");
}

#[tokio::test]
async fn labels_over_the_limit_are_denied_even_on_a_metadata_only_update() {
    let labels: serde_json::Map<String, Value> = (0..2000)
        .map(|i| (format!("l{i:05}"), json!("v".repeat(63))))
        .collect();
    let mut fat = desk("alice", json!({"timeoutMs": 60_000}));
    fat["metadata"]["labels"] = Value::Object(labels);
    let (_, body) = post(
        app(),
        "/validate",
        review("CREATE", fat.clone(), Value::Null).to_string(),
    )
    .await;
    let r = response(&body);
    assert_eq!(r["allowed"], false);
    assert_eq!(r["status"]["code"], 422);
    let causes = r["status"]["details"]["causes"].as_array().expect("causes");
    assert_eq!(causes[0]["field"], "metadata.labels", "{causes:?}");
    let message = causes[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("at most 65536 bytes (--max-metadata-bytes)"),
        "{message}"
    );
    // The same labels added to a stored desk: an UPDATE of metadata alone, still denied.
    let stored = desk("alice", json!({"timeoutMs": 60_000}));
    let (_, body) = post(
        app(),
        "/validate",
        review("UPDATE", fat.clone(), stored).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], false);
    // A desk stored with them can still lose its finalizers.
    let mut released = fat.clone();
    released["metadata"]["finalizers"] = json!([]);
    let (_, body) = post(
        app(),
        "/validate",
        review("UPDATE", released, fat).to_string(),
    )
    .await;
    assert_eq!(response(&body)["allowed"], true);
}
