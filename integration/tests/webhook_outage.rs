//! failurePolicy Fail: with the webhook server gone, creates fail with the apiserver's
//! error and nothing is stored. Own binary: it kills its operator.

use std::time::Duration;

use cyberdesk_integration::cluster::{cluster, install_everything, namespace};
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::wait::holds;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_fail_closed_when_the_webhook_is_down() {
    let c = cluster();
    let k = c.kubectl();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "outage").await;

    let args = vec![
        "--leader-election=false".to_string(),
        "--policy-dir=/nonexistent".to_string(),
    ];
    let mut op = OperatorProcess::start_serving_webhooks(&c, "outage", &args);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    let manifest = |name: &str| {
        format!(
            "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{}}\n"
        )
    };
    assert!(
        holds(Duration::from_secs(30), || k
            .apply(&manifest("up"), &["--dry-run=server"])
            .is_ok_and(|o| o.success))
        .await,
        "webhooks never answered"
    );

    op.signal(libc::SIGKILL);
    assert!(op.wait_exit(Duration::from_secs(10)).await.is_some());
    let out = k.apply(&manifest("down"), &[]).expect("kubectl");
    assert!(!out.success, "created without its webhook");
    assert!(
        out.stderr.contains("failed calling webhook"),
        "{}",
        out.stderr
    );
    let got = k
        .run(&["get", "cd", "down", "-n", &ns], None)
        .expect("kubectl");
    assert!(
        !got.success && got.stderr.contains("NotFound"),
        "stored anyway: {}",
        got.stdout
    );
}
