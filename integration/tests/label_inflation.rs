//! Labels cannot fill the leader's memory. Kubernetes limits neither how many labels a
//! desk has nor their total size, and every desk is listed by each new leader: 200 desks
//! with a MiB of labels each would have a leader holding 200 MiB of them, and the next one
//! too. With the default `--max-metadata-bytes` (64 KiB) the validating webhook denies such
//! desks, as a user applies them, naming the field, the limit and the flag. (With the limit
//! raised the caches keep no desk labels: `lean_caches.rs`; the leader's memory then is a
//! figure in docs/benchmarks.md.)

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster, install_everything, namespace};
use cyberdesk_integration::desks::wait_webhooks_active;
use cyberdesk_integration::kubectl::Kubectl;
use cyberdesk_integration::operator::{OperatorProcess, free_addr, register_webhooks};

/// Desks the webhook must deny at the default limit.
const DESKS: usize = 200;
/// Desks per `kubectl apply`.
const BATCH: usize = 20;
/// Label keys `l00000`… with 63-character values: 69 bytes of key and value each.
const LABEL_VALUE_LEN: usize = 63;
const MIB: usize = 1024 * 1024;
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
fn apply_all(user: &Kubectl, ns: &str, labels: &str, desks: usize) -> Vec<(bool, String)> {
    (0..desks)
        .step_by(BATCH)
        .map(|first| {
            let yaml = desks_yaml(ns, first, BATCH, labels);
            let out = user.apply(&yaml, &["--server-side"]).expect("kubectl");
            (out.success, out.stderr)
        })
        .collect()
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
    for (ok, stderr) in apply_all(&user, &ns, &labels, DESKS) {
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
    // With the limit raised, the caches keep no desk labels (`lean_caches.rs` checks the
    // watch the controller uses); the leader's memory with 200 such desks admitted is a
    // figure in docs/benchmarks.md: the apiserver takes seconds to server-side apply each,
    // too long for a test.
}
