use super::*;
use axum::body::Body;
use axum::http::Request;
use tower::ServiceExt;

async fn get_path(app: Router, path: &str) -> (StatusCode, String) {
    let resp = app
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn readyz_follows_the_gates() {
    let metrics = Metrics::new("me", &[]).expect("metrics");
    let readiness = Readiness::default();
    readiness.register("webhook");
    let app = router(metrics, readiness.clone());
    assert_eq!(
        get_path(app.clone(), "/readyz").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        get_path(app.clone(), "/healthz").await,
        (StatusCode::OK, "ok".into())
    );
    readiness.open("webhook");
    assert_eq!(get_path(app.clone(), "/readyz").await.0, StatusCode::OK);
    let (status, body) = get_path(app.clone(), "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("cyberdesk_active_vm_count"));
    let (status, index) = get_path(app, "/").await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert!(index.contains(path), "{index}");
    }
}
