//! The chaos soak: an operator of two replicas (leader election, both webhooks, the
//! shipped RBAC) on the test control plane with the KubeVirt simulator, a continuous
//! workload, faults on a seeded schedule, and an independent checker that judges
//! invariants all along and at the end. `make soak` runs it long; `make test` short.

pub mod checker;
pub mod faults;
pub mod history;
pub mod logs;
pub mod replicas;
pub mod report;
pub mod schedule;
pub mod workload;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::install_everything;
use crate::desks::now_ms;
use crate::kubevirt::{Simulator, SimulatorOptions};
use crate::operator::register_webhooks;
use crate::recorder::Recorder;
use crate::workspace::repo_path;

use checker::Checker;
use faults::{ControlPlaneKeeper, Targets};
use replicas::Replicas;
use report::Report;
use workload::{Tally, Workload};

/// One soak's parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long the workload and the faults run.
    pub length: Duration,
    /// Desks alive at a time.
    pub desks: usize,
    pub seed: u64,
}

impl Config {
    fn warmup(&self) -> Duration {
        (self.length / 8).min(Duration::from_secs(60))
    }

    fn cooldown(&self) -> Duration {
        (self.length / 4).min(Duration::from_secs(120))
    }
}

/// Flags every replica runs with, beyond the harness's own (`--webhook-addr`, …).
fn replica_flags(ready_url: &str) -> Vec<String> {
    vec![
        "--extra-san=127.0.0.1".to_string(),
        format!("--policy-dir={}", repo_path("policies").display()),
        format!("--ready-url={ready_url}"),
        "--notify-timeout-secs=2".to_string(),
        "--log-format=json".to_string(),
    ]
}

/// Runs a soak to the end and returns its report (violations included); `Err` only when
/// the soak itself could not be set up.
pub async fn run(cfg: Config) -> Result<Report, String> {
    eprintln!("soak: {cfg:?}");
    let (controlplane, c) = ControlPlaneKeeper::start()?;
    install_everything(&c).await;
    let client = c.client().await;
    let ns = "soak".to_string();
    let _ = c.kubectl().run(&["create", "namespace", &ns], None);
    let simulator = Simulator::start(
        client.clone(),
        SimulatorOptions {
            pending_to_scheduling: Duration::from_millis(200),
            scheduling_to_scheduled: Duration::from_millis(300),
            scheduled_to_running: Duration::from_millis(500),
            restart_backoff: Duration::from_secs(2),
            ..SimulatorOptions::in_namespace(&ns)
        },
    );
    let gateway = Recorder::start();
    let ready_url = format!("{}/ready/{{namespace}}/{{name}}", gateway.base_url());
    let service = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("the webhook Service cannot listen: {e}"))?;
    let service_addr = service.local_addr().map_err(|e| e.to_string())?;
    register_webhooks(&c, service_addr)?;
    let replicas = Replicas::start(&c, 2, replica_flags(&ready_url), service).await;
    if !replicas.wait_settled(Duration::from_secs(120)).await {
        return Err("the replicas never settled (ready, one leader)".into());
    }
    install_workload_objects(&c, &ns)?;

    let checker = Checker::default();
    checker.watch(&client, &ns);
    let workload = Workload {
        client: client.clone(),
        namespace: ns.clone(),
        target: cfg.desks,
        checker: checker.clone(),
        tally: Arc::new(Tally::default()),
        next: Arc::new(AtomicU64::new(0)),
        stop: Arc::new(AtomicBool::new(false)),
        rng_seed: cfg.seed,
    };
    let plan = schedule::plan(cfg.seed, cfg.length, cfg.warmup(), cfg.cooldown());
    let start = Instant::now();
    let started_ms = now_ms();
    let running = tokio::spawn(workload.clone().run());
    let targets = Targets {
        controlplane: &controlplane,
        replicas: &replicas,
        simulator: &simulator,
        gateway: &gateway,
        workload: &workload,
        checker: &checker,
    };
    let watch = watch_progress(&checker, &replicas, &gateway, &workload, start, cfg.length);
    let (not_injected, mut violations) = tokio::join!(faults::inject(plan, start, targets), watch);
    workload.stop.store(true, Ordering::Relaxed);
    let _ = running.await;
    // Nothing new happens now: everything pending must settle within the bounds.
    tokio::time::sleep(faults::SETTLE).await;
    absorb(&checker, &replicas, &gateway);
    let now = now_ms();
    violations.extend(checker.history().violations(now));
    violations.sort();
    violations.dedup();
    let log_findings = logs::scan(&replicas.logs(), &checker.history().faults);
    let report = Report::new(report::Inputs {
        cfg: &cfg,
        started_ms,
        history: &checker.history(),
        tally: &workload.tally,
        replicas: &replicas,
        violations,
        log_findings,
        not_injected,
        now,
    });
    if !report.passed() {
        keep_logs(&c, &replicas, cfg.seed);
    }
    replicas.stop();
    drop(simulator);
    drop(controlplane);
    Ok(report)
}

/// Copies the replicas' and the control plane's logs out of the control plane's
/// directory (removed at the end) for whoever investigates a failed soak.
fn keep_logs(c: &crate::cluster::Cluster, replicas: &Replicas, seed: u64) {
    let out = std::env::temp_dir().join(format!("cyberdesk-soak-{seed}"));
    let _ = std::fs::create_dir_all(&out);
    let mut files: Vec<std::path::PathBuf> = replicas.logs().into_iter().map(|(_, p)| p).collect();
    if let Ok(dir) = std::fs::read_dir(&c.dir) {
        files.extend(
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log")),
        );
    }
    for f in files {
        if let Some(name) = f.file_name() {
            let _ = std::fs::copy(&f, out.join(name));
        }
    }
    // What was left: desks, VMs and VMIs as the apiserver has them at the end.
    let args = [
        "get",
        "cyberdesks,virtualmachines,virtualmachineinstances,leases",
        "-A",
        "-o",
        "yaml",
    ];
    if let Ok(got) = c.kubectl().run(&args, None) {
        let _ = std::fs::write(out.join("objects-at-end.yaml"), got.stdout);
    }
    eprintln!("soak: logs kept in {}", out.display());
}

/// Copies what the replicas and the gateway saw into the history.
fn absorb(checker: &Checker, replicas: &Replicas, gateway: &Recorder) {
    let mut delivered = std::collections::HashMap::new();
    for r in gateway.requests() {
        if r.answered.is_some_and(|c| (200..300).contains(&c))
            && let Some(rest) = r.target.strip_prefix("/ready/")
        {
            delivered
                .entry(rest.to_string())
                .or_insert_with(Vec::new)
                .push(r.at_ms);
        }
    }
    let two_leaders = replicas.two_leaders();
    let own_exits = replicas
        .exits()
        .iter()
        .filter(|e| !e.injected)
        .map(|e| e.at)
        .collect();
    let mut h = checker.history();
    h.own_exits = own_exits;
    h.ready_delivered = delivered;
    h.two_leaders = two_leaders;
}

/// Checks the invariants every 10 s while the soak runs (a violation is reported with
/// the moment it was first seen) and prints a line a watching person can follow.
async fn watch_progress(
    checker: &Checker,
    replicas: &Replicas,
    gateway: &Recorder,
    workload: &Workload,
    start: Instant,
    length: Duration,
) -> Vec<history::Violation> {
    let mut seen = Vec::new();
    while start.elapsed() < length {
        tokio::time::sleep(Duration::from_secs(10)).await;
        absorb(checker, replicas, gateway);
        let (live, running, found) = {
            let h = checker.history();
            let live = h.desks.values().filter(|d| d.gone.is_none()).count();
            let running = h
                .desks
                .values()
                .filter(|d| d.gone.is_none() && d.phase == "Running")
                .count();
            (live, running, h.violations(now_ms()))
        };
        for v in found {
            if !seen.contains(&v) {
                eprintln!("soak: VIOLATION {}: {}", v.invariant, v.what);
                seen.push(v);
            }
        }
        eprintln!(
            "soak: +{:>4}s desks {live} ({running} running), created {}, refused {}, leader {:?}, violations {}",
            start.elapsed().as_secs(),
            workload.tally.created.load(Ordering::Relaxed),
            workload.tally.refused.load(Ordering::Relaxed),
            replicas.leader(),
            seen.len()
        );
    }
    seen
}

/// The user-data Secret and the warm pool some desks use.
fn install_workload_objects(c: &crate::cluster::Cluster, ns: &str) -> Result<(), String> {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: {ns}\nstringData:\n  userdata: \"#cloud-config\\n\"\n---\n{pool}",
        secret = workload::USER_DATA_SECRET,
        pool = crate::pools::pool_yaml(ns, workload::POOL, "{size: 10}"),
    );
    c.kubectl()
        .apply(&yaml, &["--server-side"])
        .map_err(|e| format!("kubectl apply: {e}"))?
        .ok()
        .map(drop)
        .map_err(|e| format!("the soak's Secret and pool: {e}"))
}
