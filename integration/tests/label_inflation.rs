//! Labels cannot fill the leader's memory. Kubernetes limits neither how many labels a
//! desk has nor their total size, and every desk is listed by each new leader: 200 desks
//! with a MiB of labels each would have a leader holding 200 MiB of them, and the next one
//! too. With the default `--max-metadata-bytes` (64 KiB) the validating webhook denies such
//! desks, as a user applies them; with the limit raised they are admitted, and the leader,
//! and the next leader after it, stay under 128 MiB resident (read from /proc) because
//! their caches keep no desk labels.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster, install_everything, namespace};
use cyberdesk_integration::desks::wait_webhooks_active;
use cyberdesk_integration::kubectl::Kubectl;
use cyberdesk_integration::operator::{OperatorProcess, Scrape, free_addr, register_webhooks};
use cyberdesk_integration::wait::eventually;

const DESKS: usize = 200;
/// Desks per `kubectl apply`.
const BATCH: usize = 20;
/// Label keys `l00000`… with 63-character values: 69 bytes of key and value each.
const LABEL_VALUE_LEN: usize = 63;
const MIB: usize = 1024 * 1024;
/// The leader's resident memory must stay under this (the Deployment's limit is 256 MiB).
const RSS_LIMIT_KIB: u64 = 128 * 1024;
const USER: &str = "lavish";

/// Labels of at least 1 MiB (keys and values), as a YAML block at four spaces.
fn mebibyte_of_labels() -> String {
    let per_label = 6 + LABEL_VALUE_LEN;
    let count = MIB.div_ceil(per_label);
    let value = "v".repeat(LABEL_VALUE_LEN);
    let mut out = String::with_capacity(count * (per_label + 8));
    for i in 0..count {
        out.push_str(&format!("    l{i:05}: {value}\n"));
    }
    out
}

/// Desks `first..first+n` of namespace `ns`, each with `labels`, as one YAML stream.
fn desks_yaml(ns: &str, first: usize, n: usize, labels: &str) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata:\n  name: fat-{i:03}\n  namespace: {ns}\n  labels:\n{labels}spec: {{timeoutMs: 3600000, timeoutAction: Stop}}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Applies every desk as the user, server-side (a client-side apply would copy the labels
/// into the last-applied annotation, which the apiserver caps at 256 KiB before any
/// webhook is asked); the stderr of each batch.
fn apply_all(user: &Kubectl, ns: &str, labels: &str) -> Vec<(bool, String)> {
    (0..DESKS)
        .step_by(BATCH)
        .map(|first| {
            let yaml = desks_yaml(ns, first, BATCH, labels);
            let out = user.apply(&yaml, &["--server-side"]).expect("kubectl");
            (out.success, out.stderr)
        })
        .collect()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Samples the process's resident memory every 100 ms until dropped; the highest sample
/// and the kernel's own high-water mark (VmHWM), KiB.
struct RssWatch {
    pid: u32,
    highest: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let (highest, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (h, s) = (highest.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                h.fetch_max(status_kib(pid, "VmRSS:"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Self { pid, highest, stop }
    }

    fn peak_kib(&self) -> u64 {
        self.highest
            .load(Ordering::Relaxed)
            .max(status_kib(self.pid, "VmHWM:"))
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn operator(
    c: &Cluster,
    identity: &str,
    webhook: std::net::SocketAddr,
    extra: &[&str],
) -> OperatorProcess {
    let flags: Vec<String> = [
        "--leader-election=false",
        "--policy-dir=/nonexistent",
        "--extra-san=127.0.0.1",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect::<Vec<_>>();
    OperatorProcess::start_on(c, identity, webhook, &flags)
}

/// Waits until the operator's caches count every desk `Provisioning` (a VM made, no
/// simulator to start it: one status write per desk, so etcd keeps few copies).
async fn all_provisioning(op: &OperatorProcess, within: Duration) {
    eventually(within, "every desk Provisioning", || async {
        let n = op.metric("cyberdesk_desks{phase=\"Provisioning\"}")?;
        (n as usize == DESKS).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_of_labels_is_denied_and_never_fills_the_leaders_memory() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "labels").await;
    cyberdesk_integration::cluster::apply(
        &c,
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {USER}, namespace: {ns}}}\n\
             rules: [{{apiGroups: [cyberdesk.io], resources: [cyberdesks], verbs: [get, list, create, update, patch]}}]\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {USER}, namespace: {ns}}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {USER}}}\n\
             subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {USER}}}]\n"
        ),
    );
    let user = c.kubectl().as_user(USER, &[]);
    let labels = mebibyte_of_labels();

    // The default limit: every desk denied, naming the field, the limit and the flag.
    let webhook = free_addr();
    register_webhooks(&c, webhook).expect("webhooks");
    let capped = operator(&c, "capped", webhook, &[]);
    assert!(
        capped.wait_ready(Duration::from_secs(60)).await,
        "{}",
        capped.log()
    );
    wait_webhooks_active(&c, &ns).await;
    let mut denied = 0;
    for (ok, stderr) in apply_all(&user, &ns, &labels) {
        assert!(!ok, "a batch was admitted");
        denied += stderr
            .lines()
            .filter(|l| {
                l.contains("is invalid: metadata.labels: the labels take")
                    && l.contains("at most 65536 bytes (--max-metadata-bytes)")
            })
            .count();
    }
    assert_eq!(denied, DESKS, "every desk denied by the webhook");
    let stored = c
        .kubectl()
        .run(&["get", "cyberdesks", "-n", &ns, "-o", "name"], None)
        .expect("kubectl");
    assert!(
        stored.success && stored.stdout.trim().is_empty(),
        "{stored:?}"
    );
    drop(capped);

    // The limit raised: admitted; the leader that reconciles them, and the next one that
    // lists them all at its start, stay under the limit.
    let raised = ["--max-metadata-bytes=4194304"];
    let first = operator(&c, "first-leader", webhook, &raised);
    assert!(
        first.wait_ready(Duration::from_secs(60)).await,
        "{}",
        first.log()
    );
    let first_rss = RssWatch::start(first.pid());
    wait_webhooks_active(&c, &ns).await;
    for (ok, stderr) in apply_all(&user, &ns, &labels) {
        assert!(ok, "{stderr}");
    }
    all_provisioning(&first, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let first_peak = first_rss.peak_kib();
    drop(first_rss);
    drop(first);

    let next = operator(&c, "next-leader", webhook, &raised);
    let next_rss = RssWatch::start(next.pid());
    assert!(
        next.wait_ready(Duration::from_secs(120)).await,
        "{}",
        next.log()
    );
    all_provisioning(&next, Duration::from_secs(300)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let next_peak = next_rss.peak_kib();
    let settled = status_kib(next.pid(), "VmRSS:");
    eprintln!(
        "operator peak RSS with {DESKS} desks of 1 MiB labels: first leader {} MiB, next leader {} MiB (settled {} MiB)",
        first_peak / 1024,
        next_peak / 1024,
        settled / 1024
    );
    assert!(
        first_peak < RSS_LIMIT_KIB,
        "the leader reached {} MiB",
        first_peak / 1024
    );
    assert!(
        next_peak < RSS_LIMIT_KIB,
        "the next leader reached {} MiB",
        next_peak / 1024
    );
}
