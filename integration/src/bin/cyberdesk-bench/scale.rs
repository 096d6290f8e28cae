//! `scale`: N desks created through the API at a fixed concurrency, as a platform's API
//! would, measured against the apiserver's own create rate on the same machine.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use cyberdesk_integration::audit::{self, AuditLog, Request};
use cyberdesk_integration::cluster::{Cluster, namespace};
use cyberdesk_integration::controlplane::OPERATOR_USER;
use cyberdesk_integration::desks::{Apis, epoch_ms, in_phase, now_ms};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, Scrape};
use cyberdesk_integration::wait::until_every;
use cyberdesk_operator::model::Cyberdesk;

use crate::figures::{ms, pct, timeout_lags};
use crate::load::{run_all, watched};
use crate::operators::operator_flags;

/// Plain creates for the apiserver's raw rate: enough for a steady figure.
const RAW_CREATES: usize = 2000;

/// One `/proc/<pid>/status` field in KiB (0 when absent).
fn status_kib(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident and peak resident memory of `pid`, KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"))
}

/// CPU time (user + system) `pid` has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn desk(name: &str) -> anyhow::Result<Cyberdesk> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": name}, "spec": {"timeoutMs": 36_000_000},
    }))?)
}

/// How many desks of `store` show `phase`.
fn count_in_phase(store: &Store<Cyberdesk>, phase: &str) -> usize {
    store.state().iter().filter(|d| in_phase(d, phase)).count()
}

fn show(requests: &BTreeMap<Request, u64>, n: usize) -> String {
    audit::per_unit(requests, n).join(", ")
}

/// What the scale section is asked to do.
pub struct Scale {
    pub desks: usize,
    pub concurrency: usize,
    /// Extra flags for the operator it starts.
    pub operator_args: Vec<String>,
    /// kube-apiserver's and etcd's process ids, for their CPU time.
    pub control_plane: (u32, u32),
}

/// CPU seconds of the processes that share the machine during a run.
struct CpuShares {
    apiserver: Duration,
    etcd: Duration,
    operator: Duration,
    /// This process: the clients creating desks and the KubeVirt simulator.
    bench: Duration,
}

impl CpuShares {
    fn read(control_plane: (u32, u32), operator: u32) -> Self {
        Self {
            apiserver: cpu_time(control_plane.0),
            etcd: cpu_time(control_plane.1),
            operator: cpu_time(operator),
            bench: cpu_time(std::process::id()),
        }
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            apiserver: self.apiserver.saturating_sub(before.apiserver),
            etcd: self.etcd.saturating_sub(before.etcd),
            operator: self.operator.saturating_sub(before.operator),
            bench: self.bench.saturating_sub(before.bench),
        }
    }

    fn show(&self, wall: Duration) -> String {
        let share = |d: Duration| {
            format!(
                "{:.1} s ({:.0} % of a core)",
                d.as_secs_f64(),
                100.0 * d.as_secs_f64() / wall.as_secs_f64()
            )
        };
        format!(
            "apiserver {}, etcd {}, operator {}, bench clients + simulator {}",
            share(self.apiserver),
            share(self.etcd),
            share(self.operator),
            share(self.bench)
        )
    }
}

pub async fn run(c: &Cluster, args: &Scale) -> anyhow::Result<()> {
    let (n, concurrency) = (args.desks, args.concurrency);
    let mut flags = operator_flags(false);
    flags.extend(args.operator_args.iter().cloned());
    let Some(audit_path) = c.audit_log.clone() else {
        anyhow::bail!("the scale bench needs the apiserver's audit log");
    };
    let client = c.client().await;
    let ns = namespace(&client, "bench-scale").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let desks = apis.desks.clone();
    let watched = watched(desks.clone());
    println!(
        "scale: {n} desks, created through the API at concurrency {concurrency}, no webhooks, zero simulator delay; operator flags {}",
        flags.join(" ")
    );

    // The apiserver's own pace: plain ConfigMaps at the same concurrency.
    let raw_ns = namespace(&client, "bench-raw").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &raw_ns);
    let raw = run_all(RAW_CREATES, concurrency, |i| {
        let cms = cms.clone();
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("raw-{i:05}")}, "data": {"k": "v"},
            }))?;
            cms.create(&PostParams::default(), &cm).await?;
            Ok(())
        }
    })
    .await?;
    let raw_rate = RAW_CREATES as f64 / raw.as_secs_f64();
    println!(
        "  apiserver raw creates: {RAW_CREATES} ConfigMaps in {:.1} s = {raw_rate:.0} writes/s",
        raw.as_secs_f64()
    );

    let op = OperatorProcess::start(c, "bench-scale", &flags);
    anyhow::ensure!(op.wait_ready(Duration::from_secs(60)).await, "not ready");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_kib, _) = memory_kib(op.pid());
    let cpu_before = cpu_time(op.pid());
    let mut log = AuditLog::at_end(audit_path.clone());

    let shares_before = CpuShares::read(args.control_plane, op.pid());
    let t = Instant::now();
    let created = run_all(n, concurrency, |i| {
        let desks = desks.clone();
        async move {
            desks
                .create(&PostParams::default(), &desk(&format!("s{i:05}"))?)
                .await?;
            Ok(())
        }
    })
    .await?;
    let all_running = until_every(
        Duration::from_secs(3600),
        Duration::from_millis(500),
        || std::future::ready((count_in_phase(&watched, "Running") == n).then_some(())),
    );
    anyhow::ensure!(
        all_running.await.is_some(),
        "only {}/{n} Running after an hour",
        count_in_phase(&watched, "Running")
    );
    let to_running = t.elapsed();
    let cpu = cpu_time(op.pid()).saturating_sub(cpu_before);
    let shares = CpuShares::read(args.control_plane, op.pid()).since(&shares_before);
    let requests = log.since_mark()?;
    let ours = requests.of(OPERATOR_USER);
    let all = requests.all();
    let desks_per_s = n as f64 / to_running.as_secs_f64();
    let writes_per_desk = audit::writes(&all) as f64 / n as f64;
    println!(
        "  created in {:.1} s; all Running after {:.1} s = {desks_per_s:.1} desks/s",
        created.as_secs_f64(),
        to_running.as_secs_f64()
    );
    println!(
        "  apiserver writes per desk, all clients: {writes_per_desk:.2}; share of the raw write capacity: {:.0} %",
        100.0 * desks_per_s * writes_per_desk / raw_rate
    );
    println!(
        "  operator requests per desk: {:.2} writes; {}",
        audit::writes(&ours) as f64 / n as f64,
        show(&ours, n)
    );
    println!(
        "  operator CPU per desk: {:.2} ms",
        cpu.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "  CPU from the first create to all Running (2 cores = 200 %): {}",
        shares.show(to_running)
    );

    tokio::time::sleep(Duration::from_secs(10)).await;
    let (settled_kib, peak_kib) = memory_kib(op.pid());
    println!(
        "  operator RSS: idle {} MiB, peak {} MiB, settled {} MiB with {n} Running desks = {:.0} bytes per desk",
        idle_kib / 1024,
        peak_kib / 1024,
        settled_kib / 1024,
        (settled_kib.saturating_sub(idle_kib) * 1024) as f64 / n as f64
    );
    // The binary's own mapped pages count in the RSS too; the split says which part grows.
    println!(
        "  of the settled RSS: anonymous {} MiB, file-backed {} MiB",
        status_kib(op.pid(), "RssAnon:") / 1024,
        status_kib(op.pid(), "RssFile:") / 1024
    );

    log.mark();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let quiet = log.since_mark()?.of(OPERATOR_USER);
    println!(
        "  operator writes in a quiet minute: {} ({})",
        audit::writes(&quiet),
        show(&quiet, 1)
    );

    // Restart with N Running desks: time to ready, and what the new process writes.
    let mut op = op;
    op.signal(libc::SIGTERM);
    anyhow::ensure!(
        op.wait_exit(Duration::from_secs(30)).await.is_some(),
        "no exit"
    );
    log.mark();
    let t = Instant::now();
    let op = OperatorProcess::start(c, "bench-scale-2", &flags);
    anyhow::ensure!(op.wait_ready(Duration::from_secs(120)).await, "not ready");
    let ready = t.elapsed();
    // Every desk gets its first pass after a restart; give them all time to have had it.
    let passes = || {
        ["success", "requeue", "error"]
            .iter()
            .filter_map(|r| op.metric(&format!("cyberdesk_reconcile_total{{result=\"{r}\"}}")))
            .sum::<f64>()
    };
    until_every(Duration::from_secs(600), Duration::from_millis(500), || {
        std::future::ready((passes() >= n as f64).then_some(()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = log.since_mark()?.of(OPERATOR_USER);
    println!(
        "  restart with {n} Running desks: ready after {}, {} passes, writes {} ({})",
        ms(ready),
        passes(),
        audit::writes(&after),
        show(&after, 1)
    );
    // The same desks in a process that only listed them: what they cost without the
    // allocator's history of the convergence above.
    println!(
        "  restarted operator RSS: {} MiB (anonymous {} MiB, file-backed {} MiB)",
        status_kib(op.pid(), "VmRSS:") / 1024,
        status_kib(op.pid(), "RssAnon:") / 1024,
        status_kib(op.pid(), "RssFile:") / 1024
    );
    // Read again once the operator's periodic heap trim (every 15 s) has surely run.
    tokio::time::sleep(Duration::from_secs(20)).await;
    println!(
        "  restarted operator RSS 20 s later: {} MiB (anonymous {} MiB), peak {} MiB",
        status_kib(op.pid(), "VmRSS:") / 1024,
        status_kib(op.pid(), "RssAnon:") / 1024,
        status_kib(op.pid(), "VmHWM:") / 1024
    );

    // What no operator can beat here: the same VMs created directly and run.
    // Run while the desks are quiet, before their timeouts make the simulator busy.
    let vm_list = apis.vms.list(&ListParams::default().limit(1)).await?;
    let Some(like) = vm_list.items.first() else {
        anyhow::bail!("no VM to copy for the floor");
    };
    let before = CpuShares::read(args.control_plane, op.pid());
    let floor = crate::floor::run(c, like, n, concurrency, &mut log).await?;
    let floor_shares = CpuShares::read(args.control_plane, op.pid()).since(&before);
    let floor_writes = audit::writes(&floor.requests) as f64 / n as f64;
    let floor_rate = n as f64 * floor_writes / floor.to_running.as_secs_f64();
    println!(
        "  KubeVirt floor: {n} of the operator's VMs created directly (no operator, no desks) at concurrency {concurrency}: all VMIs Running after {:.1} s = {:.1} VMs/s",
        floor.to_running.as_secs_f64(),
        n as f64 / floor.to_running.as_secs_f64(),
    );
    println!(
        "    writes per VM, all clients: {floor_writes:.2} ({floor_rate:.0} writes/s); {}",
        show(&floor.requests, n)
    );
    println!(
        "    CPU (2 cores = 200 %): {}",
        floor_shares.show(floor.to_running)
    );
    println!(
        "  desks to Running took {:.2}× the floor; writes per second while converging = {:.0} % of the floor's",
        to_running.as_secs_f64() / floor.to_running.as_secs_f64(),
        100.0 * desks_per_s * writes_per_desk / floor_rate
    );

    // N desks expiring in the same second.
    let list = desks.list(&ListParams::default().match_any()).await?;
    // Setting N timeouts takes about 16 ms per desk under this load (3,000 took 49 s).
    let margin = Duration::from_secs(10) + Duration::from_millis(25 * n as u64);
    let expiry_ms = now_ms() + margin.as_millis() as i64;
    let patch_start = Instant::now();
    let expiring = std::sync::Arc::new(list.items);
    run_all(expiring.len(), concurrency, |i| {
        let (desks, expiring) = (desks.clone(), expiring.clone());
        async move {
            let d = &expiring[i];
            let name = d.metadata.name.clone().unwrap_or_default();
            let started = d
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_deref())
                .ok_or_else(|| anyhow::anyhow!("{name} has no startTime"))?;
            let timeout = expiry_ms - epoch_ms(started);
            let patch = json!({"spec": {"timeoutMs": timeout, "timeoutAction": "Stop"}});
            desks
                .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
    })
    .await?;
    anyhow::ensure!(
        patch_start.elapsed() < margin,
        "setting the timeouts took {:?}, past the shared expiry",
        patch_start.elapsed()
    );
    let lags = timeout_lags(&op, n, Duration::from_secs(120) + margin).await;
    println!(
        "  timeout lag, {n} desks expiring in the same second, over {} desks: p50 {} p99 {} max {}",
        lags.len(),
        ms(pct(&lags, 0.5)),
        ms(pct(&lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default())
    );

    // The apiserver's pace for the write a halt is, a patch of a VM, with the operator and
    // the simulator watching as at expiry: a floor for halting N desks at once.
    let names: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
        apis.vms
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter_map(|vm| vm.metadata.name)
            .collect(),
    );
    let took = run_all(names.len(), concurrency, |i| {
        let (vms, names) = (apis.vms.clone(), names.clone());
        async move {
            let patch = json!({"metadata": {"labels": {"bench.cyberdesk.io/touched": "1"}}});
            vms.patch(&names[i], &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "  apiserver VM patches (a label) at concurrency {concurrency}: {} in {:.1} s = {:.0} patches/s",
        names.len(),
        took.as_secs_f64(),
        names.len() as f64 / took.as_secs_f64()
    );
    // The same share as above, measured against writes of custom resources rather than
    // ConfigMap creates: what all clients wrote per second while the desks converged,
    // over the pace of one plain VM patch.
    if !took.is_zero() && !names.is_empty() {
        println!(
            "  writes per second while converging, all clients: {:.0} = {:.0} % of the VM patch pace",
            desks_per_s * writes_per_desk,
            100.0 * desks_per_s * writes_per_desk * took.as_secs_f64() / names.len() as f64
        );
    }
    Ok(())
}
