//! `make bench`: figures, not pass/fail. Prints one line per measurement; docs/benchmarks.md
//! records them with the machine they came from.
//!
//! Sections (all by default, or name some): admission, caches, controlplane, operator,
//! apply, desks, pool, scale, expiry, webhook-memory.
//!
//! The sections use the shared pieces beside them (`load`, `figures`, `operators`) and
//! never this file or each other, except `scale`, which runs `floor` as its last step.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod caches;
mod expiry;
mod figures;
mod floor;
mod load;
mod operators;
mod pool;
mod scale;
mod webhook_memory;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use cyberdesk_integration::audit::{self, AuditLog};
use cyberdesk_integration::cluster::{Cluster, install_everything, namespace};
use cyberdesk_integration::controlplane::{ControlPlane, OPERATOR_USER, Options};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::wait::until_every;
use cyberdesk_integration::workspace::operator_binary;
use cyberdesk_operator::admission::Admission;
use cyberdesk_operator::admission::authz::NoAccessReviews;
use cyberdesk_operator::admission::mutate::MutateConfig;
use cyberdesk_operator::admission::validate::ValidateConfig;
use cyberdesk_operator::catalog::Catalog;
use cyberdesk_operator::certs::{self, tls};
use cyberdesk_operator::metrics::Metrics;
use cyberdesk_operator::model::Cyberdesk;
use cyberdesk_operator::policy::files::load_dir;
use cyberdesk_operator::policy::{PolicySet, PolicyStore};
use cyberdesk_operator::server;

use figures::{ms, pct, timeout_lags};
use operators::{delete_webhook_configs, operator_flags, until_webhooks_answer};

#[derive(Parser)]
#[command(about = "Benchmarks for cyberdesk-operator (figures, not pass/fail)")]
struct Args {
    /// Sections to run: admission, caches, controlplane, operator, apply, desks, pool, scale,
    /// expiry, webhook-memory (default: all).
    sections: Vec<String>,
    /// Desks for the scale section.
    #[arg(long, default_value_t = 1000)]
    scale_desks: usize,
    /// Requests in flight at once when the scale section creates desks (as a platform's
    /// API would).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Desks expiring together in the expiry section, one round per size and action.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    expiry_desks: Vec<usize>,
    /// timeoutAction of the expiry section's rounds: Stop, Delete or both.
    #[arg(long, value_delimiter = ',', default_value = "Stop,Delete", value_parser = ["Stop", "Delete"])]
    expiry_actions: Vec<String>,
    /// An extra flag for the operators the scale, expiry and webhook-memory sections start; repeat for several
    /// (e.g. `--operator-arg=--max-concurrent-reconciles=128`).
    #[arg(long = "operator-arg", allow_hyphen_values = true)]
    operator_args: Vec<String>,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn review(webhook: &str) -> Vec<u8> {
    let op = "CREATE";
    let object = json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "bench", "namespace": "team-b", "uid": "u"},
        "spec": if webhook == "mutate" { json!({}) } else { json!({"timeoutMs": 3600000, "timeoutAction": "Delete"}) }});
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4",
        "kind": {"group": "cyberdesk.io", "version": "v1alpha1", "kind": "Cyberdesk"},
        "resource": {"group": "cyberdesk.io", "version": "v1alpha1", "resource": "cyberdesks"},
        "name": "bench", "namespace": "team-b", "operation": op, "userInfo": {"username": "bench"},
        "object": object, "oldObject": null, "dryRun": false}})
    .to_string()
    .into_bytes()
}

/// The webhook server in-process over TLS, with the shipped policies loaded.
async fn start_webhook() -> anyhow::Result<(SocketAddr, String, CancellationToken)> {
    let (ca, ca_key) = certs::generate_ca(Duration::from_secs(86_400))?;
    let (cert, key) = certs::issue_serving(
        &ca,
        &ca_key,
        &["127.0.0.1".to_string()],
        Duration::from_secs(86_400),
    )?;
    let resolver = Arc::new(tls::CertResolver::new());
    resolver.swap(Arc::new(tls::certified_key_from_pem(&cert, &key)?));
    let sources = load_dir(&cyberdesk_integration::workspace::repo_path("policies"))?;
    let set = PolicySet::load(&sources).map_err(|e| anyhow::anyhow!("policies: {e:?}"))?;
    let admission = Arc::new(Admission {
        mutate: MutateConfig {
            default_timeout_ms: 3_600_000,
        },
        validate: ValidateConfig {
            min_timeout_ms: 1_000,
            max_timeout_ms: 30 * 86_400_000,
            vm_name_prefix: cyberdesk_operator::model::names::VM_PREFIX.into(),
        },
        scope: cyberdesk_operator::admission::scope::ScopeConfig::default(),
        policies: PolicyStore::new(set),
        metrics: Metrics::new("bench", &[])?,
        // The reviews name no Secret (no access review) and get the built-in template.
        templates: Catalog::fixed("cyberdesk-system", "cyberdesk-vm-template", vec![]),
        secret_access: Arc::new(NoAccessReviews),
        operator_username: String::new(),
    });
    let listener = server::bind("127.0.0.1:0".parse()?).await?;
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let config = Arc::new(tls::server_config(resolver)?);
    let limits = server::ServerLimits::default();
    let metrics = admission.metrics.clone();
    tokio::spawn(server::serve(
        listener,
        config,
        server::router(admission),
        limits,
        metrics,
        token.clone(),
        Duration::from_secs(1),
    ));
    Ok((addr, ca, token))
}

async fn tls_client(
    addr: SocketAddr,
    ca_pem: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::certs_from_pem(ca_pem)? {
        roots.add(c)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = connector
        .connect(rustls::pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn bench_admission() -> anyhow::Result<()> {
    let (addr, ca, token) = start_webhook().await?;
    for webhook in ["validate", "mutate"] {
        let body = Bytes::from(review(webhook));
        for (concurrency, total) in [(1usize, 3_000usize), (32, 32_000)] {
            let per_worker = total / concurrency;
            let start = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..concurrency {
                let (ca, body) = (ca.clone(), body.clone());
                workers.push(tokio::spawn(async move {
                    let mut sender = tls_client(addr, &ca).await?;
                    let mut lat = Vec::with_capacity(per_worker);
                    for _ in 0..per_worker {
                        let req = hyper::Request::post(format!("/{webhook}"))
                            .header("host", "127.0.0.1")
                            .header("content-type", "application/json")
                            .body(Full::new(body.clone()))?;
                        let t = Instant::now();
                        sender.ready().await?;
                        let resp = sender.send_request(req).await?;
                        let status = resp.status();
                        let _ = resp.into_body().collect().await?;
                        anyhow::ensure!(status == 200, "status {status}");
                        lat.push(t.elapsed());
                    }
                    anyhow::Ok(lat)
                }));
            }
            let mut all = Vec::with_capacity(total);
            for w in workers {
                all.extend(w.await??);
            }
            let wall = start.elapsed();
            all.sort();
            println!(
                "admission /{webhook} concurrency={concurrency} requests={}: p50 {} p99 {} throughput {:.0} req/s",
                all.len(),
                ms(pct(&all, 0.5)),
                ms(pct(&all, 0.99)),
                all.len() as f64 / wall.as_secs_f64()
            );
        }
    }
    token.cancel();
    Ok(())
}

fn bench_controlplane() -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let cp = ControlPlane::start(&Options::default())?;
        times.push(t.elapsed());
        drop(cp);
    }
    times.sort();
    println!(
        "control plane start-to-ready (5 runs): median {} min {} max {}",
        ms(times[2]),
        ms(times[0]),
        ms(times[4])
    );
    let cp = ControlPlane::start(&Options::default())?;
    std::thread::sleep(Duration::from_secs(15));
    let (api, etcd) = cp.pids();
    let (a, e) = (rss_kib(api), rss_kib(etcd));
    println!(
        "idle RSS after 15 s: kube-apiserver {} MiB, etcd {} MiB, total {} MiB",
        a / 1024,
        e / 1024,
        (a + e) / 1024
    );
    Ok(())
}

async fn bench_operator(c: &Cluster) -> anyhow::Result<()> {
    let bin = operator_binary();
    let size = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
    println!(
        "operator binary {}: {:.1} MiB",
        bin.display(),
        size as f64 / 1048576.0
    );
    let mut ready = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        let op = OperatorProcess::start(c, &format!("bench-start-{i}"), &operator_flags(false));
        anyhow::ensure!(
            op.wait_ready(Duration::from_secs(60)).await,
            "not ready: {}",
            op.log()
        );
        ready.push(t.elapsed());
        if i == 4 {
            tokio::time::sleep(Duration::from_secs(15)).await;
            println!(
                "operator idle RSS after 15 s (no desks): {} MiB",
                rss_kib(op.pid()) / 1024
            );
        }
    }
    ready.sort();
    println!(
        "operator start-to-ready (5 runs, includes the webhook Secret read): median {}",
        ms(ready[2])
    );
    Ok(())
}

async fn create_dry_runs(
    client: &kube::Client,
    ns: &str,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    create_dry_runs_of(client, ns, n, json!({"timeoutMs": 60000})).await
}

/// `n` dry-run creates of one desk with `spec`, one after another; sorted latencies.
async fn create_dry_runs_of(
    client: &kube::Client,
    ns: &str,
    n: usize,
    spec: serde_json::Value,
) -> anyhow::Result<Vec<Duration>> {
    let api: Api<Cyberdesk> = Api::namespaced(client.clone(), ns);
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let desk: Cyberdesk = serde_json::from_value(
        json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "probe"}, "spec": spec}),
    )?;
    let mut lat = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        api.create(&pp, &desk).await?;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

async fn bench_apply(c: &Cluster) -> anyhow::Result<()> {
    let client = c.client().await;
    let ns = namespace(&client, "bench-apply").await;
    let k = c.kubectl();
    delete_webhook_configs(c);
    tokio::time::sleep(Duration::from_secs(2)).await;
    create_dry_runs(&client, &ns, 20).await?;
    let without = create_dry_runs(&client, &ns, 200).await?;
    let op = OperatorProcess::start_serving_webhooks(c, "bench-apply", &operator_flags(true));
    anyhow::ensure!(op.wait_ready(Duration::from_secs(60)).await, "not ready");
    until_webhooks_answer(c, &ns).await?;
    create_dry_runs(&client, &ns, 20).await?;
    let with = create_dry_runs(&client, &ns, 200).await?;
    println!(
        "create (dry-run) through the apiserver, 200 requests: without webhooks p50 {} p99 {}; with both webhooks p50 {} p99 {}; added p50 {}",
        ms(pct(&without, 0.5)),
        ms(pct(&without, 0.99)),
        ms(pct(&with, 0.5)),
        ms(pct(&with, 0.99)),
        ms(pct(&with, 0.5).saturating_sub(pct(&without, 0.5)))
    );
    let mut kubectl = Vec::new();
    for i in 0..20 {
        let t = Instant::now();
        let out = k.apply(
            &desk_yaml(&ns, &format!("k{i}"), "{}"),
            &["--dry-run=server"],
        )?;
        anyhow::ensure!(out.success, "{}", out.stderr);
        kubectl.push(t.elapsed());
    }
    kubectl.sort();
    println!(
        "kubectl apply --dry-run=server with webhooks (20 runs, process start included): median {}",
        ms(kubectl[10])
    );
    let webhook = op.webhook;
    bench_access_reviews(c, &ns, "cached (5 s)").await?;
    // Same port, so the registrations still point at it; every review asks the apiserver.
    drop(op);
    let mut flags = operator_flags(true);
    flags.push("--access-review-cache-secs=0".into());
    let op = OperatorProcess::start_on(c, "bench-apply-uncached", webhook, &flags);
    anyhow::ensure!(op.wait_ready(Duration::from_secs(60)).await, "not ready");
    bench_access_reviews(c, &ns, "uncached").await?;
    // The operator stops here; its registrations would fail every later create.
    drop(op);
    delete_webhook_configs(c);
    Ok(())
}

/// Dry-run creates by a tenant (RBAC, not system:masters) with and without a user-data
/// Secret: the difference is the SubjectAccessReview the validating webhook makes.
async fn bench_access_reviews(c: &Cluster, ns: &str, label: &str) -> anyhow::Result<()> {
    let tenant_rbac = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: bench-ud, namespace: {ns}}}\nstringData: {{userdata: x}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: bench-tenant, namespace: {ns}}}\n\
         rules: [{{apiGroups: [cyberdesk.io], resources: [cyberdesks], verbs: [create]}}, {{apiGroups: [''], resources: [secrets], verbs: [get]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: bench-tenant, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: bench-tenant}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: bench-tenant}}]\n"
    );
    let out = c.kubectl().apply(&tenant_rbac, &[])?;
    anyhow::ensure!(out.success, "{}", out.stderr);
    let kubeconfig = kube::config::Kubeconfig::read_from(&c.kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    config.auth_info.impersonate = Some("bench-tenant".into());
    config.auth_info.impersonate_groups = Some(vec!["bench".into()]);
    let tenant = kube::Client::try_from(config)?;
    let with_secret =
        json!({"timeoutMs": 60000, "userDataSecretRef": {"name": "bench-ud", "key": "userdata"}});
    create_dry_runs_of(&tenant, ns, 20, with_secret.clone()).await?;
    let plain = create_dry_runs_of(&tenant, ns, 200, json!({"timeoutMs": 60000})).await?;
    let secret = create_dry_runs_of(&tenant, ns, 200, with_secret).await?;
    println!(
        "create (dry-run) by a tenant with both webhooks, 200 requests: no Secret p50 {} p99 {}; with a user-data Secret, access review {label}: p50 {} p99 {}; added p50 {}",
        ms(pct(&plain, 0.5)),
        ms(pct(&plain, 0.99)),
        ms(pct(&secret, 0.5)),
        ms(pct(&secret, 0.99)),
        ms(pct(&secret, 0.5).saturating_sub(pct(&plain, 0.5)))
    );
    Ok(())
}

async fn bench_desks(c: &Cluster) -> anyhow::Result<()> {
    let client = c.client().await;
    let ns = namespace(&client, "bench-desks").await;
    let sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let op = OperatorProcess::start(c, "bench-desks", &operator_flags(false));
    anyhow::ensure!(op.wait_ready(Duration::from_secs(60)).await, "not ready");
    let api: Api<Cyberdesk> = Api::namespaced(client.clone(), &ns);
    let mut to_running = Vec::new();
    let audit = c.audit_log.clone().map(AuditLog::at_end);
    for i in 0..20 {
        let desk: Cyberdesk = serde_json::from_value(
            json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
            "metadata": {"name": format!("r{i:02}")}, "spec": {"timeoutMs": 3600000}}),
        )?;
        let t = Instant::now();
        api.create(&PostParams::default(), &desk).await?;
        let name = format!("r{i:02}");
        let running = until_every(
            Duration::from_secs(60),
            Duration::from_millis(5),
            || async { (apis.phase(&name).await.as_deref() == Some("Running")).then_some(()) },
        );
        anyhow::ensure!(running.await.is_some(), "{name} never ran");
        to_running.push(t.elapsed());
    }
    to_running.sort();
    println!(
        "create → phase Running, zero simulator delay (20 desks, one at a time): median {} p90 {}",
        ms(pct(&to_running, 0.5)),
        ms(pct(&to_running, 0.9))
    );
    if let Some(audit) = audit {
        let requests = audit.since_mark()?.of(OPERATOR_USER);
        println!(
            "operator requests per desk, create → Running (20 desks): {} writes; {}",
            audit::writes(&requests) as f64 / 20.0,
            audit::per_unit(&requests, 20).join(", ")
        );
    }

    // Timeout lag: 100 desks expiring 20 s after creation; the operator logs the lag it saw.
    let all: Vec<String> = (0..100)
        .map(|i| {
            desk_yaml(
                &ns,
                &format!("t{i:03}"),
                "{timeoutMs: 20000, timeoutAction: Stop}",
            )
        })
        .collect();
    let out = c.kubectl().apply(&all.join("---\n"), &[])?;
    anyhow::ensure!(out.success, "{}", out.stderr);
    let lags = timeout_lags(&op, 100, Duration::from_secs(120)).await;
    println!(
        "timeout lag (expiry → halt issued) over {} desks: p50 {} p99 {} max {}",
        lags.len(),
        ms(pct(&lags, 0.5)),
        ms(pct(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default())
    );
    drop(sim);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let want = |s: &str| args.sections.is_empty() || args.sections.iter().any(|a| a == s);
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        meminfo()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    if want("admission") {
        runtime.block_on(bench_admission())?;
    }
    if want("caches") {
        caches::run(args.scale_desks);
    }
    if want("controlplane") {
        bench_controlplane()?;
    }
    if want("operator")
        || want("apply")
        || want("desks")
        || want("pool")
        || want("scale")
        || want("expiry")
        || want("webhook-memory")
    {
        let cp = ControlPlane::start(&Options {
            audit_log: true,
            profiling: true,
            ..Default::default()
        })?;
        let c = Cluster::of(&cp);
        runtime.block_on(install_everything(&c));
        if want("operator") {
            runtime.block_on(bench_operator(&c))?;
        }
        if want("apply") {
            runtime.block_on(bench_apply(&c))?;
        }
        if want("desks") {
            runtime.block_on(bench_desks(&c))?;
        }
        if want("pool") {
            runtime.block_on(pool::run(&c))?;
        }
        if want("scale") {
            let scale = scale::Scale {
                desks: args.scale_desks,
                concurrency: args.concurrency,
                operator_args: args.operator_args.clone(),
                control_plane: cp.pids(),
            };
            runtime.block_on(scale::run(&c, &scale))?;
        }
        if want("expiry") {
            let expiry = expiry::Expiry {
                sizes: args.expiry_desks.clone(),
                actions: args.expiry_actions.clone(),
                concurrency: args.concurrency,
                operator_args: args.operator_args.clone(),
            };
            runtime.block_on(expiry::run(&c, &expiry))?;
        }
        if want("webhook-memory") {
            runtime.block_on(webhook_memory::run(&c, &args.operator_args))?;
        }
        drop(runtime);
        drop(cp);
    }
    Ok(())
}

fn meminfo() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| format!("{:.0} GiB RAM", kib as f64 / 1048576.0))
        .unwrap_or_default()
}
