//! The webhook server under hostile clients, as an attacker on the pod network would try it:
//! thousands of connections that send half a request header, and more idle connections
//! than the server admits. The leader keeps its Lease meanwhile, a well-formed review is
//! answered at once, and the process stays up within its memory limit. Also the serving
//! certificate's renewal under live admissions (files mode, as with cert-manager).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::{Cluster, cluster, namespace};
use cyberdesk_integration::controlplane::{PemPair, TestCa};
use cyberdesk_integration::desks::{desk_yaml, wait_webhooks_active};
use cyberdesk_integration::operator::{Scrape, ready_operator, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;
use cyberdesk_integration::webhook_tls::{served_leaf, webhook_tls_client};
use cyberdesk_integration::workspace::operator_output;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const FLOOD: usize = 2000;
const HALF_HEADER: &[u8] = b"POST /validate HTTP/1.1\r\nHost: x\r\n";
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The two floods share two cores; run them one after the other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// The operator's container limit in manifests/base/deployment.yaml.
const MEMORY_LIMIT_KIB: u64 = 256 * 1024;

async fn connector(c: &Cluster) -> TlsConnector {
    let secrets: Api<Secret> = Api::namespaced(c.client().await, "cyberdesk-system");
    let ca = eventually(Duration::from_secs(20), "the webhook CA", || async {
        let s = secrets.get_opt("cyberdesk-webhook-tls").await.ok()??;
        let bytes = s.data?.get("ca.crt")?.0.clone();
        String::from_utf8(bytes).ok()
    })
    .await;
    webhook_tls_client(&ca).expect("TLS client for the webhook CA")
}

async fn tls(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    connector.connect(name.to_owned(), tcp).await
}

/// Reads until the server closes the stream (or `within` passes); when it closed.
async fn closed_at<S: tokio::io::AsyncRead + Unpin>(mut s: S, within: Duration) -> Option<Instant> {
    let mut buf = [0u8; 1024];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all).await.ok()
}

/// One well-formed review on a fresh connection; the HTTP status it got.
async fn review(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<String> {
    let mut s = tls(connector, addr).await?;
    let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"},"resource":{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"},"name":"d","namespace":"n","operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk","metadata":{"name":"d","namespace":"n"},"spec":{}}}}"#;
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    s.read_to_string(&mut response).await?;
    Ok(response.lines().next().unwrap_or("").to_string())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn lease(c: &Cluster) -> (String, String) {
    let api: Api<Lease> = Api::namespaced(c.client().await, "cyberdesk-system");
    let lease = api.get("cyberdesk-operator").await.expect("Lease");
    let spec = lease.spec.unwrap_or_default();
    (
        spec.holder_identity.unwrap_or_default(),
        spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_headers_are_cut_off_and_the_leader_keeps_its_lease() {
    let _one_flood_at_a_time = SERIAL.lock().await;
    let c = cluster();
    let mut flags = reconciler_only_flags(true);
    // Room for the whole flood, so the well-formed review below is not refused for capacity
    // (the flood and the review all come from 127.0.0.1).
    flags.push("--webhook-max-connections=2500".into());
    flags.push("--webhook-max-connections-per-source=2500".into());
    let op = ready_operator(&c, "flooded", &flags).await;
    let connector = connector(&c).await;
    let (holder, renewed_before) =
        eventually(Duration::from_secs(30), "a Lease holder", || async {
            let (holder, renewed) = lease(&c).await;
            (holder == "flooded").then_some((holder, renewed))
        })
        .await;

    // 2,000 connections, each sending half a header and then nothing.
    let sent_count = Arc::new(AtomicUsize::new(0));
    let opened = Instant::now();
    let mut pending = Vec::new();
    for _ in 0..FLOOD {
        let (connector, addr, sent_count) = (connector.clone(), op.webhook, sent_count.clone());
        pending.push(tokio::spawn(async move {
            let mut s = tls(&connector, addr).await.expect("TLS connection");
            s.write_all(HALF_HEADER).await.expect("half a header");
            let sent = Instant::now();
            sent_count.fetch_add(1, Ordering::Relaxed);
            let closed = closed_at(s, HEADER_TIMEOUT + Duration::from_secs(40)).await;
            (sent, closed)
        }));
    }
    eventually(
        Duration::from_secs(30),
        "every half header sent",
        || async { (sent_count.load(Ordering::Relaxed) == FLOOD).then_some(()) },
    )
    .await;
    let opening = opened.elapsed();
    eprintln!("{FLOOD} half-header connections open after {opening:?}");

    // Meanwhile: a fresh, well-formed review is answered at once.
    let asked = Instant::now();
    let status = review(&connector, op.webhook).await.expect("review");
    let answered = asked.elapsed();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(
        answered < Duration::from_secs(1),
        "the review took {answered:?} during the flood"
    );
    let rss = rss_kib(op.pid());
    assert!(rss < MEMORY_LIMIT_KIB, "RSS {rss} KiB during the flood");

    let mut latest = Duration::ZERO;
    for task in pending {
        let (sent, closed) = task.await.expect("client task");
        let closed = closed.expect("a half-header connection was never closed");
        latest = latest.max(closed.saturating_duration_since(sent));
    }
    eprintln!("slowest close after its half header: {latest:?}");
    // The client sees a close as late as its own tasks get to run: on a loaded machine
    // that lags by about as long as opening the flood took. Still far below the 60 s idle
    // timeout, and the count below says which timer closed them.
    let bound = HEADER_TIMEOUT + opening + Duration::from_secs(3);
    assert!(
        latest <= bound,
        "a connection stayed open {latest:?} after its half header (bound {bound:?})"
    );
    let header_timeouts = op
        .metric(r#"cyberdesk_webhook_connections_rejected_total{reason="header_timeout"}"#)
        .unwrap_or(0.0);
    assert!(
        header_timeouts >= FLOOD as f64,
        "header timeouts counted: {header_timeouts}"
    );

    // The leader renewed its Lease all along and still holds it.
    let (holder_after, renewed_after) = lease(&c).await;
    assert_eq!(holder_after, holder);
    assert_ne!(
        renewed_after, renewed_before,
        "the Lease was not renewed during the flood"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_past_the_cap_are_refused_and_nothing_breaks() {
    let _one_flood_at_a_time = SERIAL.lock().await;
    let c = cluster();
    let mut flags = reconciler_only_flags(false);
    // Every connection here comes from 127.0.0.1: the global cap is the one under test.
    flags.push("--webhook-max-connections-per-source=2000".into());
    let op = ready_operator(&c, "capped", &flags).await;
    let connector = connector(&c).await;

    // 1,500 plain TCP connections that never speak; the cap is 1,024.
    let mut sockets = Vec::new();
    for _ in 0..1500 {
        sockets.push(TcpStream::connect(op.webhook).await.expect("connect"));
    }
    let refused = eventually(
        Duration::from_secs(5),
        "connections past the cap refused",
        || async {
            let n =
                op.metric(r#"cyberdesk_webhook_connections_rejected_total{reason="capacity"}"#)?;
            (n >= 476.0).then_some(n)
        },
    )
    .await;
    eprintln!("refused for capacity: {refused}");
    let open = op
        .metric("cyberdesk_webhook_connections_open")
        .expect("cyberdesk_webhook_connections_open is not published");
    assert!(open <= 1024.0, "{open} connections open past the cap");
    // The process is alive and healthy throughout.
    assert!(
        op.wait_ready(Duration::from_secs(1)).await,
        "not ready while full"
    );

    // Once the silent ones hit the handshake timeout, the server takes new work again.
    drop(sockets);
    let status = eventually(
        Duration::from_secs(20),
        "a review answered after the flood",
        || async { review(&connector, op.webhook).await.ok() },
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(op.wait_ready(Duration::from_secs(1)).await);
}

/// Sends `bytes` and reports how long after that the server closed the stream.
async fn closed_after_sending(
    connector: &TlsConnector,
    addr: SocketAddr,
    bytes: &[u8],
    within: Duration,
) -> Option<Duration> {
    let mut s = tls(connector, addr).await.expect("TLS connection");
    s.write_all(bytes).await.expect("write");
    let sent = Instant::now();
    closed_at(s, within).await.map(|t| t.duration_since(sent))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_off_at_the_request_timeout_and_idle_ones_at_the_idle_timeout() {
    let _one_flood_at_a_time = SERIAL.lock().await;
    let c = cluster();
    let mut flags = reconciler_only_flags(false);
    flags.push("--webhook-request-timeout-secs=2".into());
    flags.push("--webhook-idle-timeout-secs=3".into());
    let op = ready_operator(&c, "timeouts", &flags).await;
    let connector = connector(&c).await;
    // Each connection is looked at every 250 ms: a close lands within that after the limit,
    // plus slack for a loaded machine; never before the limit.
    let slack = Duration::from_secs(3);

    // Complete headers, then 10 of the 1,000 body bytes promised, then nothing.
    let stalled = b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersi";
    let closed = closed_after_sending(&connector, op.webhook, stalled, Duration::from_secs(20))
        .await
        .expect("a stalled body was never cut off");
    eprintln!("stalled body closed after {closed:?}");
    assert!(
        closed >= Duration::from_secs(2) && closed <= Duration::from_secs(2) + slack,
        "closed {closed:?} after the body stalled (request timeout 2 s)"
    );
    let timed_out = op
        .metric(r#"cyberdesk_webhook_connections_rejected_total{reason="request_timeout"}"#)
        .unwrap_or(0.0);
    assert_eq!(timed_out, 1.0, "request timeouts counted");

    // A keep-alive connection that was answered and then stays silent.
    let mut s = tls(&connector, op.webhook).await.expect("TLS connection");
    let body = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-2","kind":{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"},"resource":{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"},"name":"d","namespace":"n","operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk","metadata":{"name":"d","namespace":"n"},"spec":{}}}}"#;
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.expect("write");
    let mut first = [0u8; 12];
    s.read_exact(&mut first).await.expect("a response");
    assert_eq!(&first, b"HTTP/1.1 200");
    let answered = Instant::now();
    let closed = closed_at(s, Duration::from_secs(20))
        .await
        .expect("an idle connection was never closed")
        .duration_since(answered);
    eprintln!("idle connection closed after {closed:?}");
    assert!(
        closed >= Duration::from_secs(3) && closed <= Duration::from_secs(3) + slack,
        "closed {closed:?} after its answer (idle timeout 3 s)"
    );
    // An idle close is ordinary, not a refusal.
    let refusals: f64 = [
        "capacity",
        "handshake_timeout",
        "header_timeout",
        "request_timeout",
        "per_source",
        "memory_budget",
        "too_large",
    ]
    .iter()
    .map(|r| {
        op.metric(&format!(
            r#"cyberdesk_webhook_connections_rejected_total{{reason="{r}"}}"#
        ))
        .unwrap_or(0.0)
    })
    .sum();
    assert_eq!(refusals, 1.0, "only the stalled body was a refusal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_still_open_when_the_drain_runs_out_exits_1() {
    let c = cluster();
    let mut flags = reconciler_only_flags(false);
    flags.push("--shutdown-delay-secs=0".into());
    flags.push("--shutdown-timeout-secs=2".into());
    // Longer than the drain, so only the drain deadline can end the stalled request.
    flags.push("--webhook-request-timeout-secs=60".into());
    let mut op = ready_operator(&c, "undrained", &flags).await;
    let connector = connector(&c).await;
    let mut stalled = tls(&connector, op.webhook).await.expect("TLS connection");
    stalled
        .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersi")
        .await
        .expect("write");
    // The server has the request (its headers) before the signal arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let signalled = Instant::now();
    op.signal(libc::SIGTERM);
    let status = op
        .wait_exit(Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("still running 15 s after SIGTERM: {}", op.log()));
    eprintln!("exited {status} {:?} after SIGTERM", signalled.elapsed());
    assert_eq!(status.code(), Some(1), "{}", op.log());
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before the 2 s drain ran out"
    );
    assert!(
        op.log().contains("shutdown did not finish within 2s"),
        "{}",
        op.log()
    );
    drop(stalled);
}

/// The layout the kubelet gives a Secret volume: the files are symlinks through `..data`,
/// and an update swaps `..data` to a new directory in one rename.
fn publish_secret_volume(dir: &std::path::Path, generation: u32, pair: &PemPair) {
    let data = dir.join(format!("..gen{generation}"));
    std::fs::create_dir_all(&data).expect("volume data dir");
    std::fs::write(data.join("tls.crt"), &pair.cert_pem).expect("tls.crt");
    std::fs::write(data.join("tls.key"), &pair.key_pem).expect("tls.key");
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(format!("..gen{generation}"), &staged).expect("..data_tmp");
    std::fs::rename(&staged, dir.join("..data")).expect("swap ..data");
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).expect("file link");
        }
    }
}

fn leaf_der(pem: &str) -> Vec<u8> {
    cyberdesk_operator::certs::tls::certs_from_pem(pem)
        .expect("leaf PEM")
        .remove(0)
        .to_vec()
}

/// What the cert-manager overlay relies on: caBundle holds a CA, and a renewed serving
/// certificate from the same CA is swapped in under live traffic without one failed
/// admission. The files change the way a Secret volume changes (one `..data` rename).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_renewed_leaf_of_the_same_ca_is_served_without_a_failed_admission() {
    let _alone = SERIAL.lock().await;
    let c = cluster();
    let ca = TestCa::new("cyberdesk-webhook-ca").expect("CA");
    let sans = ["cyberdesk-operator.cyberdesk-system.svc", "127.0.0.1"];
    let first = ca.issue_server("cyberdesk-operator", &sans).expect("leaf");
    let renewed = ca.issue_server("cyberdesk-operator", &sans).expect("leaf");
    let volume = c.dir.join("renewal-tls");
    publish_secret_volume(&volume, 1, &first);

    let mut flags = reconciler_only_flags(false);
    flags.extend([
        "--tls-mode=files".to_string(),
        format!("--tls-cert-file={}", volume.join("tls.crt").display()),
        format!("--tls-key-file={}", volume.join("tls.key").display()),
        // The apiserver keeps its connection to a webhook open while it is busy; closing
        // each one after a second idle makes every admission below a fresh TLS handshake,
        // so each one checks the leaf served at that moment against caBundle.
        "--webhook-idle-timeout-secs=1".to_string(),
    ]);
    let op = ready_operator(&c, "renewal", &flags).await;
    // The admin's install: both configurations with the CA (not the leaf) as caBundle, as
    // the cainjector writes it from `inject-ca-from: .../cyberdesk-webhook-ca`.
    let ca_file = c.dir.join("renewal-ca.crt");
    std::fs::write(&ca_file, ca.cert_pem()).expect("CA file");
    let config = operator_output(&[
        "webhook-config",
        &format!("--url=https://{}", op.webhook),
        &format!("--ca-file={}", ca_file.display()),
    ]);
    assert!(config.status.success(), "{config:?}");
    let applied = c
        .kubectl()
        .apply(&String::from_utf8_lossy(&config.stdout), &["--server-side"])
        .expect("kubectl")
        .ok();
    assert!(applied.is_ok(), "{applied:?}");
    let ns = namespace(&c.client().await, "renewal").await;
    wait_webhooks_active(&c, &ns).await;
    assert_eq!(
        served_leaf(ca.cert_pem(), op.webhook).await,
        Ok(leaf_der(&first.cert_pem))
    );

    // Admissions, each on a new connection, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (kubectl, stop) = (c.kubectl(), stop.clone());
        let desk = desk_yaml(&ns, "renewal", "{}");
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let out = kubectl
                    .apply(&desk, &["--dry-run=server", "-o", "json"])
                    .expect("kubectl");
                // The finalizer is the mutating webhook's mark: this admission went through
                // the webhook server, not around it.
                let admitted = out.success && out.stdout.contains("vm-cleanup");
                outcomes.push((admitted, out.stderr));
                std::thread::sleep(Duration::from_millis(1500));
            }
            outcomes
        })
    };
    tokio::time::sleep(Duration::from_secs(4)).await;
    publish_secret_volume(&volume, 2, &renewed);
    let renewed_der = leaf_der(&renewed.cert_pem);
    eventually(
        Duration::from_secs(20),
        "the renewed leaf served",
        || async {
            (served_leaf(ca.cert_pem(), op.webhook).await.ok()? == renewed_der).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = traffic.join().expect("traffic thread");

    let failed: Vec<&String> = outcomes
        .iter()
        .filter(|(admitted, _)| !admitted)
        .map(|(_, stderr)| stderr)
        .collect();
    eprintln!(
        "{} admissions across the renewal, {} failed",
        outcomes.len(),
        failed.len()
    );
    assert!(outcomes.len() >= 6, "only {} admissions", outcomes.len());
    assert!(failed.is_empty(), "failed admissions: {failed:?}");
}
