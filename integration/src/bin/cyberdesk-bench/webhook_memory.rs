//! `webhook-memory`: the operator's peak RSS while clients send AdmissionReviews whose object
//! holds a long array of zeros straight to its webhook port, by body size and by clients at
//! once. A fresh operator per row, since the peak (`VmHWM`) only grows.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use cyberdesk_integration::cluster::Cluster;
use cyberdesk_integration::operator::{OperatorProcess, Scrape};
use cyberdesk_integration::wait::eventually;
use cyberdesk_integration::webhook_tls::{webhook_tls_client, zeros_review};

/// Reviews each client sends, one after the other.
const ROUNDS: usize = 2;

/// One review on a fresh connection, reading while writing (a refusal may come before the
/// body is sent); the status line or what went wrong.
async fn send(connector: &TlsConnector, addr: SocketAddr, body: &[u8]) -> String {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .map_err(std::io::Error::other)?
            .to_owned();
        let s = connector.connect(name, tcp).await?;
        let (mut reader, mut writer) = tokio::io::split(s);
        let head = format!(
            "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let write = async {
            writer.write_all(head.as_bytes()).await?;
            writer.write_all(body).await
        };
        let read = async {
            let mut response = Vec::new();
            reader.read_to_end(&mut response).await.map(|_| response)
        };
        let (_, response) = tokio::join!(write, read);
        response
    };
    match exchange.await {
        Ok(response) => String::from_utf8_lossy(&response)
            .lines()
            .next()
            .unwrap_or("closed")
            .trim_start_matches("HTTP/1.1 ")
            .to_string(),
        Err(e) => format!("error: {}", e.kind()),
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

pub async fn run(c: &Cluster, operator_args: &[String]) -> anyhow::Result<()> {
    for kib in [256usize, 512, 1024, 2048, 4096] {
        let body = Arc::new(zeros_review(kib * 1024));
        for clients in [1usize, 4, 8] {
            let mut flags = vec![
                "--policy-dir=/nonexistent".to_string(),
                "--leader-election=false".to_string(),
                "--manage-webhook-config=false".to_string(),
                "--extra-san=127.0.0.1".to_string(),
            ];
            flags.extend(operator_args.iter().cloned());
            let op = OperatorProcess::start(c, &format!("webhook-memory-{kib}-{clients}"), &flags);
            anyhow::ensure!(
                op.wait_ready(Duration::from_secs(60)).await,
                "operator not ready: {}",
                op.log()
            );
            let secrets: Api<Secret> = Api::namespaced(c.client().await, "cyberdesk-system");
            let ca = eventually(Duration::from_secs(20), "the webhook CA", || async {
                let s = secrets.get_opt("cyberdesk-webhook-tls").await.ok()??;
                String::from_utf8(s.data?.get("ca.crt")?.0.clone()).ok()
            })
            .await;
            let connector = webhook_tls_client(&ca).map_err(anyhow::Error::msg)?;
            let idle = status_kib(op.pid(), "VmHWM:");
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let (connector, body, addr) = (connector.clone(), body.clone(), op.webhook);
                tasks.push(tokio::spawn(async move {
                    let mut answers = Vec::new();
                    for _ in 0..ROUNDS {
                        answers.push(send(&connector, addr, &body).await);
                    }
                    answers
                }));
            }
            let mut answers = BTreeMap::<String, usize>::new();
            for task in tasks {
                for answer in task.await? {
                    *answers.entry(answer).or_default() += 1;
                }
            }
            let took = started.elapsed();
            let peak = status_kib(op.pid(), "VmHWM:");
            let refused: Vec<String> = [
                "too_large",
                "memory_budget",
                "request_timeout",
                "handshake_timeout",
            ]
            .iter()
            .map(|reason| {
                let sample =
                    format!(r#"cyberdesk_webhook_connections_rejected_total{{reason="{reason}"}}"#);
                format!("{reason} {}", op.metric(&sample).unwrap_or(0.0))
            })
            .collect();
            println!(
                "webhook-memory: {kib} KiB x {clients} clients x {ROUNDS}: peak RSS {:.0} MiB (idle peak {:.0} MiB) in {took:.1?}, answers {answers:?}, counted {}",
                peak as f64 / 1024.0,
                idle as f64 / 1024.0,
                refused.join(", ")
            );
        }
    }
    Ok(())
}
