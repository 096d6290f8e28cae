//! The memory budget through the routes: what is refused, how, and what still gets in.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::admission::Admission;
use crate::admission::authz::NoAccessReviews;
use crate::admission::mutate::MutateConfig;
use crate::admission::validate::ValidateConfig;
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::policy::PolicyStore;
use crate::server::budget::MemoryBudget;
use crate::server::{MAX_BODY_BYTES, router_with_budget};

const MIB: usize = 1024 * 1024;

fn admission(metrics: &Metrics) -> Arc<Admission> {
    Arc::new(Admission {
        mutate: MutateConfig {
            default_timeout_ms: 3_600_000,
        },
        validate: ValidateConfig {
            min_timeout_ms: 1_000,
            max_timeout_ms: 30 * 86_400_000,
            vm_name_prefix: crate::model::names::VM_PREFIX.into(),
        },
        policies: PolicyStore::default(),
        metrics: metrics.clone(),
        templates: Catalog::fixed("cyberdesk-system", "cyberdesk-vm-template", vec![]),
        secret_access: Arc::new(NoAccessReviews),
        operator_username: "system:serviceaccount:cyberdesk-system:cyberdesk-operator".into(),
        scope: crate::admission::scope::ScopeConfig::default(),
    })
}

fn review(spec: Value) -> String {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "cyberdesk.io", "version": "v1alpha1", "kind": "Cyberdesk"},
            "resource": {"group": "cyberdesk.io", "version": "v1alpha1", "resource": "cyberdesks"},
            "name": "alice", "namespace": "team-a", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                "metadata": {"name": "alice", "namespace": "team-a"}, "spec": spec}
        }
    })
    .to_string()
}

/// A review whose object holds an array of zeros, `bytes` long in all.
fn zeros_review(bytes: usize) -> String {
    let head = review(json!({"padding": "HERE"}));
    let zeros = (bytes.saturating_sub(head.len()) / 2).max(1);
    let mut array = String::with_capacity(zeros * 2 + 2);
    array.push('[');
    for i in 0..zeros {
        array.push_str(if i == 0 { "0" } else { ",0" });
    }
    array.push(']');
    head.replace("\"HERE\"", &array)
}

async fn post(app: Router, body: String) -> (StatusCode, Option<String>, Value) {
    let response = app
        .oneshot(
            Request::post("/mutate")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("response");
    let status = response.status();
    let retry = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn refusals(metrics: &Metrics, reason: &str) -> u64 {
    metrics
        .webhook_connections_rejected
        .with_label_values(&[reason])
        .get()
}

#[tokio::test]
async fn a_review_whose_parse_would_not_fit_is_refused_413_before_it_is_parsed() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let budget = MemoryBudget::new(32 * MIB);
    let app = router_with_budget(admission(&metrics), budget.clone());
    let body = zeros_review(MAX_BODY_BYTES - 1024);
    let (status, retry, answer) = post(app, body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(retry, None);
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("24 MiB of memory")),
        "{answer}"
    );
    assert_eq!(refusals(&metrics, "too_large"), 1);
    assert_eq!(budget.used(), 0, "the refused request gave its share back");
}

#[tokio::test]
async fn a_request_the_budget_cannot_hold_now_is_refused_503_at_once() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let budget = MemoryBudget::new(32 * MIB);
    // Large requests in flight hold their whole part of the budget.
    let mut in_flight = budget.share();
    assert!(in_flight.try_grow(24 * MIB));
    let app = router_with_budget(admission(&metrics), budget.clone());

    // A 1 MiB body cannot be taken now: refused before it is read, and told to come back.
    let (status, retry, answer) = post(app.clone(), zeros_review(MIB)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains("memory budget")),
        "{answer}"
    );
    assert_eq!(refusals(&metrics, "memory_budget"), 1);

    // An ordinary review still gets in, from the part kept for small requests.
    let (status, _, answer) = post(app.clone(), review(json!({}))).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["response"]["uid"], "u-1");
    assert_eq!(answer["response"]["allowed"], true);

    // Once the others are answered, the large one fits again.
    drop(in_flight);
    let (status, _, _) = post(app, zeros_review(64 * 1024)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn oversized_bodies_are_refused_413_and_counted() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let app = router_with_budget(admission(&metrics), MemoryBudget::new(32 * MIB));
    let (status, _, _) = post(app, " ".repeat(MAX_BODY_BYTES + 1)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refusals(&metrics, "too_large"), 1);
}

#[tokio::test]
async fn a_body_without_a_length_is_charged_as_it_arrives() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let budget = MemoryBudget::new(32 * MIB);
    let mut in_flight = budget.share();
    assert!(in_flight.try_grow(24 * MIB));
    let app = router_with_budget(admission(&metrics), budget.clone());
    let body = zeros_review(2 * MIB);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let response = app
        .oneshot(
            Request::post("/validate")
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refusals(&metrics, "memory_budget"), 1);
    drop(in_flight);
    assert_eq!(budget.used(), 0);
}

/// Every check refused by the SubjectAccessReview rate limit.
struct Throttled;

impl crate::admission::authz::SecretAccess for Throttled {
    fn may_get_secret<'a>(
        &'a self,
        _who: &'a k8s_openapi::api::authentication::v1::UserInfo,
        _namespace: &'a str,
        _name: &'a str,
    ) -> futures::future::BoxFuture<
        'a,
        Result<crate::admission::authz::Access, crate::admission::authz::AccessError>,
    > {
        Box::pin(async {
            Err(crate::admission::authz::AccessError::Throttled {
                rate: 20,
                burst: 100,
            })
        })
    }
}

#[tokio::test]
async fn a_check_past_the_access_review_rate_is_a_denial_that_says_why() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let mut admission = Arc::unwrap_or_clone(admission(&metrics));
    admission.secret_access = Arc::new(Throttled);
    let app = router_with_budget(Arc::new(admission), MemoryBudget::new(32 * MIB));
    let body = review(json!({"userDataSecretRef": {"name": "creds", "key": "userdata"}}));
    let response = app
        .oneshot(
            Request::post("/validate")
                .body(Body::from(body))
                .expect("request"),
        )
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    let r = &answer["response"];
    assert_eq!(r["allowed"], false, "{r}");
    let cause = &r["status"]["details"]["causes"][0];
    assert_eq!(cause["field"], "spec.userDataSecretRef.name", "{r}");
    let message = cause["message"].as_str().unwrap_or("");
    assert!(
        message.contains("too many access checks right now")
            && message.contains("--access-review-rate")
            && message.contains("try again"),
        "{message}"
    );
}

#[tokio::test]
async fn broken_json_is_charged_for_what_its_parse_takes_before_it_fails() {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let budget = MemoryBudget::new(32 * MIB);
    let app = router_with_budget(admission(&metrics), budget.clone());
    // An array of zeros that never ends: parsed as far as it goes before the 400.
    let mut broken = zeros_review(200 * 1024);
    broken.truncate(broken.len() / 2);
    let (status, _, _) = post(app.clone(), broken.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // With the large requests' part of the budget taken, the same body cannot be parsed now.
    let mut in_flight = budget.share();
    assert!(in_flight.try_grow(24 * MIB));
    let (status, retry, _) = post(app, broken).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(refusals(&metrics, "memory_budget"), 1);
}
