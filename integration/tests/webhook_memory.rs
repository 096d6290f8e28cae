//! The webhook server's memory under hostile reviews, as anyone who reaches port 8443 could
//! send them: eight clients at once, each sending 4 MiB AdmissionReviews whose object holds
//! a long array of zeros (two bytes a value on the wire, 32 or more once parsed). The
//! operator's peak RSS stays under 128 MiB (half the Deployment's limit), an ordinary review
//! is answered all along, and every refusal is counted. Also the per-source connection cap.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::{Cluster, cluster};
use cyberdesk_integration::operator::{Scrape, ready_operator, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;
use cyberdesk_integration::webhook_tls::{webhook_tls_client, zeros_review};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The largest body the server reads.
const BODY: usize = 4 * 1024 * 1024;
const CLIENTS: usize = 8;
/// Reviews each client sends, one after the other.
const ROUNDS: usize = 3;
const PEAK_LIMIT_KIB: u64 = 128 * 1024;
/// One test at a time: each measures a process's memory and both share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

/// A TLS connection to `addr` from the source address `from` (any port).
async fn tls_from(
    connector: &TlsConnector,
    from: [u8; 4],
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    let tcp = socket.connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
    connector.connect(name.to_owned(), tcp).await
}

fn review_head(uid: &str, spec: &str) -> String {
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"{uid}","kind":{{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"}},"resource":{{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"}},"name":"d","namespace":"n","operation":"CREATE","userInfo":{{"username":"u"}},"object":{{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk","metadata":{{"name":"d","namespace":"n"}},"spec":{spec}}}}}}}"#
    )
}

/// One request on a fresh connection; the status line, or the error that ended it.
async fn send(
    connector: &TlsConnector,
    from: [u8; 4],
    addr: SocketAddr,
    body: &[u8],
) -> Result<String, String> {
    let s = tls_from(connector, from, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (mut reader, mut writer) = tokio::io::split(s);
    // The server may answer before it has read the body (a refusal): read while writing.
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(body).await?;
        writer.flush().await
    };
    let read = async {
        let mut response = Vec::new();
        reader.read_to_end(&mut response).await.map(|_| response)
    };
    let (written, read) = tokio::join!(write, read);
    match read {
        Ok(response) if !response.is_empty() => Ok(String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()),
        Ok(_) => Err(format!("closed without an answer (write: {written:?})")),
        Err(e) => Err(format!("read: {e} (write: {written:?})")),
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn refusals(op: &impl Scrape, reason: &str) -> f64 {
    op.metric(&format!(
        r#"cyberdesk_webhook_connections_rejected_total{{reason="{reason}"}}"#
    ))
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_clients_sending_4_mib_reviews_of_zeros_do_not_grow_the_operator_past_128_mib() {
    let _alone = SERIAL.lock().await;
    let c = cluster();
    let op = ready_operator(&c, "memory", &reconciler_only_flags(false)).await;
    let connector = connector(&c).await;
    let pid = op.pid();
    let peak_before = status_kib(pid, "VmHWM:");
    let body = Arc::new(zeros_review(BODY));
    assert_eq!(body.len(), BODY);

    let flooding = Arc::new(AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (connector, body, addr) = (connector.clone(), body.clone(), op.webhook);
        clients.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..ROUNDS {
                outcomes.push(send(&connector, [127, 0, 0, 1], addr, &body).await);
            }
            outcomes
        }));
    }
    // Meanwhile: ordinary reviews, one after the other, and the memory sampled.
    let ordinary = {
        let (connector, addr, flooding) = (connector.clone(), op.webhook, flooding.clone());
        tokio::spawn(async move {
            let body = review_head("ordinary", "{}").into_bytes();
            let mut answers = Vec::new();
            while flooding.load(Ordering::Relaxed) {
                let asked = Instant::now();
                let status = send(&connector, [127, 0, 0, 1], addr, &body).await;
                answers.push((status, asked.elapsed()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            answers
        })
    };
    let sampler = {
        let flooding = flooding.clone();
        tokio::spawn(async move {
            let mut highest = 0;
            while flooding.load(Ordering::Relaxed) {
                highest = highest.max(status_kib(pid, "VmRSS:"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            highest
        })
    };
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.expect("client task"));
    }
    let flood_took = started.elapsed();
    flooding.store(false, Ordering::Relaxed);
    let answers = ordinary.await.expect("ordinary reviews");
    let highest_sampled = sampler.await.expect("sampler");
    let peak = status_kib(pid, "VmHWM:");

    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for outcome in &outcomes {
        let key = match outcome {
            Ok(line) => line.clone(),
            Err(e) => format!("error: {e}"),
        };
        *statuses.entry(key).or_default() += 1;
    }
    let too_large = refusals(&op, "too_large");
    let budget = refusals(&op, "memory_budget");
    eprintln!(
        "{} hostile reviews in {flood_took:?}: {statuses:?}; refusals counted: too_large {too_large}, memory_budget {budget}",
        outcomes.len()
    );
    eprintln!(
        "peak RSS (VmHWM) {peak} KiB (before the flood {peak_before} KiB), highest sampled VmRSS {highest_sampled} KiB"
    );
    eprintln!(
        "{} ordinary reviews during the flood: {:?}",
        answers.len(),
        answers
            .iter()
            .map(|(s, t)| format!("{} in {t:?}", s.as_deref().unwrap_or("failed")))
            .collect::<Vec<_>>()
    );

    assert!(
        peak < PEAK_LIMIT_KIB,
        "peak RSS {peak} KiB during the flood (limit {PEAK_LIMIT_KIB} KiB)"
    );
    assert!(!answers.is_empty(), "no ordinary review was sent");
    for (status, _) in &answers {
        assert!(
            status
                .as_deref()
                .is_ok_and(|s| s.starts_with("HTTP/1.1 200")),
            "an ordinary review during the flood got {status:?}"
        );
    }
    // Every hostile review was refused, and every refusal counted.
    assert_eq!(
        too_large + budget,
        (CLIENTS * ROUNDS) as f64,
        "refusals counted: too_large {too_large}, memory_budget {budget}"
    );
    assert!(
        outcomes.iter().all(|o| o
            .as_ref()
            .is_ok_and(|s| s.starts_with("HTTP/1.1 413") || s.starts_with("HTTP/1.1 503"))
            || o.is_err()),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_source_cannot_take_every_connection() {
    let _alone = SERIAL.lock().await;
    let c = cluster();
    let mut flags = reconciler_only_flags(false);
    flags.push("--webhook-max-connections-per-source=10".into());
    let op = ready_operator(&c, "per-source", &flags).await;
    let connector = connector(&c).await;

    // 30 silent connections from 127.0.0.1: 10 are kept, 20 closed at once.
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(TcpStream::connect(op.webhook).await.expect("connect"));
    }
    let refused = eventually(
        Duration::from_secs(5),
        "connections past the per-source cap refused",
        || async {
            let n = refusals(&op, "per_source");
            (n >= 20.0).then_some(n)
        },
    )
    .await;
    assert_eq!(refused, 20.0);
    assert_eq!(refusals(&op, "capacity"), 0.0);

    // Another source is served meanwhile; the full one is not.
    let body = review_head("other-source", "{}").into_bytes();
    let status = send(&connector, [127, 0, 0, 2], op.webhook, &body).await;
    assert!(
        status
            .as_deref()
            .is_ok_and(|s| s.starts_with("HTTP/1.1 200")),
        "{status:?}"
    );
    let status = send(&connector, [127, 0, 0, 1], op.webhook, &body).await;
    assert!(
        status.is_err(),
        "a connection past the cap was served: {status:?}"
    );

    // Once its connections close, the source is served again.
    drop(silent);
    let status = eventually(
        Duration::from_secs(10),
        "a review from 127.0.0.1 after its connections closed",
        || async {
            send(&connector, [127, 0, 0, 1], op.webhook, &body)
                .await
                .ok()
        },
    )
    .await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}
