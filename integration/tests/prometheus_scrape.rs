//! A real Prometheus (Debian's `prometheus` package, which `make test` installs) scrapes
//! the operator with the shipped alert rules loaded, as a cluster's would: the target is
//! up, the operator's metrics are queryable over Prometheus' HTTP API, no alert fires in a
//! healthy run, and CyberdeskOperatorDown fires once the operator is gone. The rules are
//! the shipped ones with every `for:` cut to 5 s, so the test does not wait minutes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cyberdesk_integration::cluster::{apply, cluster, namespace};
use cyberdesk_integration::controlplane::http_get;
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{free_addr, ready_operator, reconciler_only_flags};
use cyberdesk_integration::wait::eventually;
use cyberdesk_integration::workspace::repo_path;

/// Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped rules (the PrometheusRule's spec) with every `for:` set to 5 s.
fn rules_for_test() -> String {
    let text = std::fs::read_to_string(repo_path("manifests/monitoring/prometheusrule.yaml"))
        .expect("prometheusrule.yaml");
    let rule: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
    let mut spec = rule["spec"].clone();
    for group in spec["groups"].as_sequence_mut().expect("groups") {
        for r in group["rules"].as_sequence_mut().expect("rules") {
            if let Some(map) = r.as_mapping_mut()
                && map.contains_key("for")
            {
                map.insert("for".into(), "5s".into());
            }
        }
    }
    serde_yaml::to_string(&spec).expect("YAML")
}

fn start_prometheus(dir: &std::path::Path, target: SocketAddr) -> Prometheus {
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("rules.yaml"), rules_for_test()).expect("rules");
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [rules.yaml]\n\
         scrape_configs:\n  - job_name: cyberdesk-operator\n    static_configs: [{{targets: ['{target}']}}]\n"
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let addr = free_addr();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("prometheus not found ({e}): `make test` installs Debian's prometheus package")
        });
    Prometheus { child, addr }
}

/// An instant query's result vector, or `None` when Prometheus did not answer.
fn query(p: &Prometheus, promql: &str) -> Option<Vec<serde_json::Value>> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = http_get(p.addr, &format!("/api/v1/query?query={encoded}")).ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"].as_array().cloned()
}

/// The single value of a query that returns one series.
fn value(p: &Prometheus, promql: &str) -> Option<f64> {
    let result = query(p, promql)?;
    result.first()?["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_operator_and_the_down_alert_fires_only_when_it_is_gone() {
    let c = cluster();
    let operator = ready_operator(&c, "scraped", &reconciler_only_flags(false)).await;
    // No webhooks: the reconciler adds the finalizer itself.
    let client = c.client().await;
    let ns = namespace(&client, "scrape").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    apply(&c, &desk_yaml(&ns, "watched", "{timeoutMs: 600000}"));
    apis.wait_phase("watched", "Running", Duration::from_secs(30))
        .await;

    let prometheus = start_prometheus(&c.dir.join("prometheus"), operator.admin);
    eventually(
        Duration::from_secs(60),
        "the operator scraped (up == 1)",
        || async { (value(&prometheus, r#"up{job="cyberdesk-operator"}"#)? == 1.0).then_some(()) },
    )
    .await;
    eventually(Duration::from_secs(30), "metrics queryable", || async {
        let passes = value(&prometheus, "sum(cyberdesk_reconcile_total)")?;
        let running = value(&prometheus, r#"cyberdesk_desks{phase="Running"}"#)?;
        (passes > 0.0 && running >= 1.0).then_some(())
    })
    .await;
    // Healthy: after several evaluations past every (shortened) `for:`, nothing fires.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let firing = query(&prometheus, r#"ALERTS{alertstate="firing"}"#).expect("ALERTS");
    assert!(
        firing.is_empty(),
        "alerts firing in a healthy run: {firing:?}"
    );

    // The operator gone: the down alert fires.
    drop(operator);
    eventually(
        Duration::from_secs(60),
        "CyberdeskOperatorDown firing",
        || async {
            let firing = query(
                &prometheus,
                r#"ALERTS{alertname="CyberdeskOperatorDown", alertstate="firing"}"#,
            )?;
            (!firing.is_empty()).then_some(())
        },
    )
    .await;
}
