//! The ready call against a local HTTP listener and a client whose answers the test
//! gives: made once per desk however often it is asked for, retried on a failure, and
//! recorded in the desk's status.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kube::runtime::events::Reporter;
use kube::runtime::{reflector, watcher};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::model::DeskNamespaces;
use crate::test_client::{Log, client};

const STATUS: &str = "/apis/cyberdesk.io/v1alpha1/namespaces/ns/cyberdesks/alice/status";

fn desk() -> Cyberdesk {
    serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "alice", "namespace": "ns", "uid": "desk-uid"},
        "spec": {},
    }))
    .expect("desk")
}

/// A listener answering each connection with the next of `codes` (the last one repeated);
/// the number of requests it answered.
async fn listener(codes: Vec<u16>) -> (String, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = socket.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let n = count.fetch_add(1, Ordering::SeqCst);
            let code = codes.get(n).or(codes.last()).copied().unwrap_or(200);
            let reply =
                format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (
        format!("http://{addr}/ready/{{namespace}}/{{name}}"),
        served,
    )
}

fn notifier(url: &str, client: kube::Client) -> (Notifier, Metrics) {
    let metrics = Metrics::new("test", &[]).expect("metrics");
    let (desks, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Apply(desk()));
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    let (announcer, _lanes) =
        Announcer::start(client.clone(), reporter, metrics.events_dropped.clone());
    let cfg = NotifierConfig {
        ready_url: Some(ReadyUrl::parse(url).expect("url")),
        supabase: None,
        retry: RetryPolicy {
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
            max_attempts: 3,
        },
        attempt_timeout: Duration::from_secs(5),
        namespaces: DeskNamespaces::new(Vec::new()),
    };
    let http = HttpClient::new(cfg.attempt_timeout).expect("http client");
    let notifier = Notifier::new(
        client,
        http,
        cfg,
        desks,
        metrics.clone(),
        announcer,
        CancellationToken::new(),
    );
    (notifier, metrics)
}

/// Waits until the client was asked for the desk's status record.
async fn recorded(log: &Log) -> Value {
    for _ in 0..500 {
        if let Some(asked) = log.to(STATUS).pop() {
            return asked.body;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no status record written");
}

#[tokio::test]
async fn the_ready_call_is_made_once_per_desk_and_recorded() {
    let (url, served) = listener(vec![200]).await;
    let (client, log) = client(|_| (200, json!({})));
    let (notifier, metrics) = notifier(&url, client);
    let d = desk();
    notifier.ready(&d);
    notifier.ready(&d);
    let record = recorded(&log).await;
    assert_eq!(
        record["status"]["notifications"]["ready"]["outcome"],
        "Delivered"
    );
    assert_eq!(record["status"]["notifications"]["ready"]["attempts"], 1);
    // Asked again after the record: still taken, not called again.
    notifier.ready(&d);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(served.load(Ordering::SeqCst), 1);
    let delivered = metrics
        .notifications
        .with_label_values(&["ready", "delivered"])
        .get();
    assert_eq!(delivered, 1);
}

#[tokio::test]
async fn a_failed_ready_call_is_retried_then_given_up_and_recorded() {
    let (url, served) = listener(vec![503]).await;
    let (client, log) = client(|_| (200, json!({})));
    let (notifier, _) = notifier(&url, client);
    notifier.ready(&desk());
    let record = recorded(&log).await;
    let ready = &record["status"]["notifications"]["ready"];
    assert_eq!(ready["outcome"], "GaveUp");
    assert_eq!(ready["attempts"], 3);
    assert_eq!(served.load(Ordering::SeqCst), 3);
}
