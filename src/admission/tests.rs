/// The webhook router driven with crafted AdmissionReviews.
mod handlers;

use super::*;
use crate::verdict::FieldViolation;

#[test]
fn respond_lists_every_cause() {
    let base = AdmissionResponse::invalid("x");
    let verdict = Verdict {
        violations: vec![
            FieldViolation {
                field: "spec.timeoutMs".into(),
                message: "too long".into(),
            },
            FieldViolation {
                field: "metadata.name".into(),
                message: "too long".into(),
            },
        ],
        warnings: vec!["careful".into()],
    };
    let resp = respond(base, DESK, "desk", verdict);
    assert!(!resp.allowed);
    assert_eq!(resp.result.code, 422);
    let details = resp.result.details.as_ref().expect("details");
    assert_eq!(details.causes.len(), 2);
    assert!(resp.result.message.contains("spec.timeoutMs: too long"));
    assert_eq!(resp.warnings, Some(vec!["careful".to_string()]));
}

#[test]
fn envelope_errors_are_bad_reviews() {
    assert!(parse(b"").is_err());
    assert!(parse(b"not json").is_err());
    assert!(
        parse(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#).is_err()
    );
    assert!(parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).is_err());
    // A request we cannot read but whose uid we know: a denied review, not a 400.
    let denied = parse(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","operation":"EXPLODE"}}"#);
    match denied {
        Ok(Err(resp)) => {
            assert_eq!(resp.uid, "u1");
            assert!(!resp.allowed);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_review_is_read_once_into_the_fields_the_webhooks_use() {
    let body = |old_object: &str| {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u-9","kind":{{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"}},"resource":{{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"}},"requestKind":{{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"}},"options":{{"apiVersion":"meta.k8s.io/v1","kind":"UpdateOptions","fieldManager":"kubectl"}},"name":"d","namespace":"n","operation":"UPDATE","userInfo":{{"username":"alice","groups":["team-a"],"extra":{{"k":["v"]}}}},"object":{{"metadata":{{"name":"d"}},"spec":{{"timeoutMs":5000}}}},"oldObject":{old_object},"dryRun":true}}}}"#
        )
    };
    let Ok(Ok(req)) = parse(body(r#"{"metadata":{"name":"d"}}"#).as_bytes()) else {
        panic!("not parsed");
    };
    assert_eq!(req.uid, "u-9");
    assert_eq!(req.kind.kind, "Cyberdesk");
    assert_eq!(req.operation, Operation::Update);
    assert_eq!(req.namespace.as_deref(), Some("n"));
    assert_eq!(req.user_info.username.as_deref(), Some("alice"));
    assert!(req.user_info.extra.is_some());
    assert!(req.dry_run);
    assert_eq!(
        req.object
            .as_ref()
            .and_then(|o| o.pointer("/spec/timeoutMs")),
        Some(&serde_json::json!(5000))
    );
    assert!(req.old_object.is_some());
    // An oldObject that is not an object: denied, with the uid.
    match parse(body("[1]").as_bytes()) {
        Ok(Err(resp)) => {
            assert_eq!(resp.uid, "u-9");
            assert!(!resp.allowed);
        }
        other => panic!("unexpected {other:?}"),
    }
    // A null oldObject is no oldObject.
    let Ok(Ok(req)) = parse(body("null").as_bytes()) else {
        panic!("not parsed");
    };
    assert!(req.old_object.is_none());
}

#[test]
fn bookkeeping_is_finalizers_managed_fields_version_and_status() {
    let old = serde_json::json!({"metadata": {"name": "d", "labels": {"team": "a"}, "resourceVersion": "1",
        "finalizers": ["x"]}, "spec": {"timeoutMs": 1}, "status": {"phase": "Running"}});
    let mut new = old.clone();
    new["metadata"]["finalizers"] = serde_json::json!([]);
    new["metadata"]["resourceVersion"] = serde_json::json!("2");
    new["status"]["phase"] = serde_json::json!("Stopping");
    assert!(bookkeeping_only(&old, &new));
    new["metadata"]["labels"] = serde_json::json!({});
    assert!(!bookkeeping_only(&old, &new));
    let mut annotated = old.clone();
    annotated["metadata"]["annotations"] = serde_json::json!({"a": "b"});
    assert!(!bookkeeping_only(&old, &annotated));
    // Status and bookkeeping keys count as absent whether missing or present.
    let mut bare = old.clone();
    if let Some(root) = bare.as_object_mut() {
        root.remove("status");
    }
    if let Some(meta) = bare["metadata"].as_object_mut() {
        meta.remove("finalizers");
        meta.remove("resourceVersion");
    }
    assert!(bookkeeping_only(&old, &bare) && bookkeeping_only(&bare, &old));
    // Any other key on one side only is a change.
    let mut added = old.clone();
    added["spec"]["timeoutAction"] = serde_json::json!("Stop");
    assert!(!bookkeeping_only(&old, &added) && !bookkeeping_only(&added, &old));
    // Shapes that are not objects are compared as they are.
    assert!(!bookkeeping_only(&serde_json::json!([]), &old));
    let odd = serde_json::json!({"metadata": "m", "status": 1});
    assert!(bookkeeping_only(
        &odd,
        &serde_json::json!({"metadata": "m"})
    ));
    assert!(!bookkeeping_only(
        &odd,
        &serde_json::json!({"metadata": "n"})
    ));
}

#[test]
fn truncation_respects_char_boundaries() {
    let long = "é".repeat(500);
    let t = truncate(&long);
    assert!(t.len() <= MAX_ECHO + 3);
}
