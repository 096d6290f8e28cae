//! The one wrapper counts every pass of both controllers in `cyberdesk_reconcile_total`.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::controller::pool::context::PoolContext;
use crate::controller::test_support::{client, refusal, world};
use crate::model::{CyberdeskPool, CyberdeskPoolSpec};

fn pool(namespace: Option<&str>) -> CyberdeskPool {
    let mut pool = CyberdeskPool::new("warm", CyberdeskPoolSpec::default());
    pool.metadata.namespace = namespace.map(String::from);
    pool.metadata.uid = Some("pool-uid".into());
    pool
}

fn passes(metrics: &crate::metrics::Metrics, result: &str) -> u64 {
    metrics.reconcile_total.with_label_values(&[result]).get()
}

#[tokio::test]
async fn a_pool_pass_is_counted_like_a_desk_pass() {
    let (client, log) = client(|_| refusal(500, "InternalError"));
    let w = world(client);
    let ctx = Arc::new(PoolContext::new(w.shared.clone()));
    // A pool being deleted that no longer holds the finalizer: nothing left to do, and
    // nothing asked of the apiserver.
    let mut gone = pool(Some("team"));
    gone.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    let action = reconcile(Arc::new(gone), ctx).await.expect("pass");
    assert_eq!(action, Action::await_change());
    assert_eq!(passes(&w.metrics, "success"), 1);
    assert!(log.to("cyberdeskpools").is_empty());
}

#[tokio::test]
async fn a_failed_pool_pass_is_counted_and_backs_off() {
    let (client, _) = client(|_| refusal(500, "InternalError"));
    let w = world(client);
    let ctx = Arc::new(PoolContext::new(w.shared.clone()));
    let homeless = Arc::new(pool(None));
    let error = reconcile(homeless.clone(), ctx.clone())
        .await
        .expect_err("no namespace");
    assert!(matches!(error, Error::NoNamespace), "{error}");
    assert_eq!(passes(&w.metrics, "error"), 1);
    // The first retry comes after RETRY_MIN, the next after twice that.
    let first = error_policy(homeless.clone(), &error, ctx.clone());
    let second = error_policy(homeless, &error, ctx);
    assert_eq!(first, Action::requeue(PoolContext::RETRY_MIN));
    assert_eq!(second, Action::requeue(PoolContext::RETRY_MIN * 2));
    let errors = w
        .metrics
        .reconcile_errors
        .with_label_values(&[error.metric_label()])
        .get();
    assert_eq!(errors, 2);
}
