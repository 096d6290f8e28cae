//! Shared set-up and waits for the end-to-end tests.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cyberdesk_operator::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance};
use kube::Api;

pub use crate::harness::register_webhooks;
use crate::harness::{OperatorProcess, SharedOperator, start_shared_operator};
use crate::kubevirt::{Simulator, SimulatorHandle, SimulatorOptions};
use crate::operator::{operator_output, repo_path};
use crate::shared::Cluster;

/// The shipped files that give the operator its identity and rights.
const OPERATOR_RBAC: [&str; 2] = [
    "manifests/base/serviceaccount.yaml",
    "manifests/base/rbac.yaml",
];

/// `kubectl apply --server-side` of one manifest file as the admin. `path` is relative to
/// the repository root (or absolute): tests apply the files exactly as they ship.
pub fn apply_file(c: &Cluster, path: impl AsRef<Path>) -> Result<String, String> {
    apply_path(c, "-f", path.as_ref())
}

/// `kubectl apply --server-side -k` of a kustomization directory as the admin, relative to
/// the repository root (or absolute).
pub fn apply_kustomization(c: &Cluster, dir: impl AsRef<Path>) -> Result<String, String> {
    apply_path(c, "-k", dir.as_ref())
}

/// Server-side, forcing conflicts: the admin's copy wins over whatever a previous test or
/// the operator wrote, as a re-install would.
fn apply_path(c: &Cluster, flag: &str, rel: &Path) -> Result<String, String> {
    let path = repo_path(rel);
    let shown = path.display().to_string();
    c.kubectl()
        .run(
            &["apply", "--server-side", "--force-conflicts", flag, &shown],
            None,
        )
        .map_err(|e| format!("kubectl apply {flag} {shown}: {e}"))?
        .ok()
        .map_err(|e| format!("kubectl apply {flag} {shown}: {e}"))
}

/// The operator namespace with the shipped ServiceAccount and RBAC. The harness runs the
/// operator as that ServiceAccount, so a right the manifests lack fails the test that
/// needs it. Idempotent.
pub fn install_operator_rbac(c: &Cluster) {
    let _ = c
        .kubectl()
        .run(&["create", "namespace", "cyberdesk-system"], None);
    for file in OPERATOR_RBAC {
        if let Err(e) = apply_file(c, file) {
            panic!("installing {file}: {e}");
        }
    }
}

/// Installs the Cyberdesk CRD (from `cyberdesk-operator crd`), KubeVirt's CRDs, the
/// operator namespace and the operator's shipped ServiceAccount and RBAC. Idempotent.
pub async fn install_everything(c: &Cluster) {
    let k = c.kubectl();
    let crd = operator_output(&["crd"]);
    let applied = k
        .apply(&String::from_utf8_lossy(&crd.stdout), &["--server-side"])
        .expect("kubectl")
        .ok();
    assert!(applied.is_ok(), "{applied:?}");
    let waited = k
        .run(
            &[
                "wait",
                "--for=condition=Established",
                "crd/cyberdesks.cyberdesk.io",
            ],
            None,
        )
        .expect("kubectl");
    assert!(waited.success, "{}", waited.stderr);
    install_operator_rbac(c);
    crate::kubevirt::install_kubevirt_crds(&c.client().await)
        .await
        .expect("kubevirt crds");
    // KubeVirt's API refuses invalid VMs (virt-api); so does the stand-in.
    crate::kubevirt::install_vm_admission(&c.client().await)
        .await
        .expect("kubevirt VM admission");
}

/// Everything installed and an operator started with `flags` as its ServiceAccount, ready;
/// panics with the operator's log otherwise.
pub async fn ready_operator(c: &Cluster, identity: &str, flags: &[String]) -> OperatorProcess {
    install_everything(c).await;
    let operator = OperatorProcess::start(c, identity, flags);
    assert!(
        operator.wait_ready(Duration::from_secs(60)),
        "{}",
        operator.log()
    );
    operator
}

/// One event as `kubectl get events` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEvent {
    pub type_: String,
    pub reason: String,
    pub note: String,
    /// How many times it happened: a repeated event is one object whose series counts up.
    pub count: u64,
}

/// The events recorded about object `name` in `ns`, oldest first, read the way a user
/// would: `kubectl get events --field-selector involvedObject.name=NAME`. Both event APIs
/// land there (`note` reads as `message`).
pub fn events_about(c: &Cluster, ns: &str, name: &str) -> Vec<SeenEvent> {
    let selector = format!("involvedObject.name={name}");
    let Ok(out) = c.kubectl().run(
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &selector,
            "--sort-by=.metadata.creationTimestamp",
            "-o",
            "json",
        ],
        None,
    ) else {
        return Vec::new();
    };
    let Ok(list) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    let text = |e: &serde_json::Value, key: &str| e[key].as_str().unwrap_or("").to_string();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| SeenEvent {
            type_: text(e, "type"),
            reason: text(e, "reason"),
            note: text(e, "message"),
            count: e["series"]["count"]
                .as_u64()
                .or_else(|| e["count"].as_u64())
                .unwrap_or(1),
        })
        .collect()
}

/// Waits for an event with `reason` about `name`, returning it.
pub async fn wait_event(
    c: &Cluster,
    ns: &str,
    name: &str,
    reason: &str,
    within: Duration,
) -> SeenEvent {
    let what = format!("a {reason} event about {ns}/{name}");
    eventually(within, &what, || async {
        events_about(c, ns, name)
            .into_iter()
            .find(|e| e.reason == reason)
    })
    .await
}

/// Milliseconds since the Unix epoch of an RFC 3339 time the operator wrote.
pub fn epoch_ms(rfc3339: &str) -> i64 {
    cyberdesk_operator::controller::expiry::parse(rfc3339)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {rfc3339:?}"))
        .as_millisecond()
}

/// Milliseconds since the Unix epoch now, on the clock the operator also reads.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A field of an object as kubectl prints it with `-o jsonpath`, e.g. what KubeVirt wrote
/// into a VMI, read without the operator's model.
pub fn jsonpath(c: &Cluster, ns: &str, what: &str, path: &str) -> String {
    c.kubectl()
        .run(
            &["get", what, "-n", ns, "-o", &format!("jsonpath={path}")],
            None,
        )
        .expect("kubectl")
        .stdout
}

pub fn desk_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec: {spec}\n"
    )
}

/// Polls `f` every 50 ms until it yields `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Apis {
    pub desks: Api<Cyberdesk>,
    pub vms: Api<VirtualMachine>,
    pub vmis: Api<VirtualMachineInstance>,
}

impl Apis {
    pub fn new(client: &kube::Client, ns: &str) -> Self {
        Self {
            desks: Api::namespaced(client.clone(), ns),
            vms: Api::namespaced(client.clone(), ns),
            vmis: Api::namespaced(client.clone(), ns),
        }
    }

    /// How many desks in the namespace report `phase`.
    pub async fn count_in_phase(&self, phase: &str) -> usize {
        let Ok(list) = self.desks.list(&Default::default()).await else {
            return 0;
        };
        list.items
            .iter()
            .filter(|d| d.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()) == Some(phase))
            .count()
    }

    pub async fn phase(&self, name: &str) -> Option<String> {
        let desk = self.desks.get_opt(name).await.ok()??;
        desk.status?.phase.map(|p| p.as_str().to_string())
    }

    /// Waits for the desk's condition `type_` to carry `reason`, returning the condition.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        within: Duration,
    ) -> cyberdesk_operator::model::conditions::Condition {
        let what = format!("{name}: condition {type_} with reason {reason}");
        eventually(within, &what, || async {
            let desk = self.desks.get_opt(name).await.ok()??;
            cyberdesk_operator::model::conditions::find(&desk.status?.conditions, type_)
                .filter(|c| c.reason == reason)
                .cloned()
        })
        .await
    }

    /// A Running desk started with a long timeout gets one that makes it expire about
    /// `from_now` from now (so a slow start never eats into the window a test watches);
    /// `spec` holds the other spec fields as YAML flow entries. Returns the new expiry in
    /// epoch milliseconds, once the status shows it.
    pub async fn expire_in(&self, c: &Cluster, name: &str, spec: &str, from_now: Duration) -> i64 {
        let desk = self.desks.get(name).await.expect("desk");
        let ns = desk.metadata.namespace.expect("namespace");
        let started = desk.status.and_then(|s| s.start_time).expect("startTime");
        let timeout_ms = now_ms() - epoch_ms(&started) + from_now.as_millis() as i64;
        let extra = if spec.is_empty() {
            String::new()
        } else {
            format!(", {spec}")
        };
        let yaml = desk_yaml(&ns, name, &format!("{{timeoutMs: {timeout_ms}{extra}}}"));
        let out = c.kubectl().apply(&yaml, &[]).expect("kubectl");
        assert!(out.success, "{}", out.stderr);
        let expected = epoch_ms(&started) + timeout_ms;
        eventually(
            Duration::from_secs(10),
            "the new expiry in the status",
            || async {
                let expiry = self.desks.get(name).await.ok()?.status?.expiry_time?;
                (epoch_ms(&expiry) == expected).then_some(expected)
            },
        )
        .await
    }

    /// Waits for the desk to report `phase`, returning it.
    pub async fn wait_phase(&self, name: &str, phase: &str, within: Duration) -> Cyberdesk {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Ok(Some(desk)) = self.desks.get_opt(name).await {
                if desk
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map(|p| p.as_str())
                    == Some(phase)
                {
                    return desk;
                }
                last = desk.status.clone();
            }
            assert!(
                start.elapsed() < within,
                "timed out after {within:?} waiting for {name} to reach phase {phase}; last status: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The shared control plane with everything installed and one operator per test binary
/// serving the webhooks (self-managed TLS, registered by URL; see
/// [`OperatorProcess::start_serving_webhooks`]), plus `extra` flags.
pub async fn webhook_operator(extra: &[&str]) -> (Cluster, SharedOperator) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    static OPERATOR: std::sync::OnceLock<Result<SharedOperator, String>> =
        std::sync::OnceLock::new();
    let c = crate::shared::cluster();
    INSTALLED.get_or_init(|| install_everything(&c)).await;
    let mut flags = vec![
        "--leader-election=false".to_string(),
        "--policy-dir=/nonexistent".to_string(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let op = OPERATOR.get_or_init(|| {
        let c = c.clone();
        start_shared_operator(move || OperatorProcess::start_serving_webhooks(&c, "shared", &flags))
    });
    match op {
        Ok(op) => (c, op.clone()),
        Err(e) => panic!("operator: {e}"),
    }
}

/// A fresh namespace for one test, the KubeVirt simulator (with `opts`) scoped to it, and
/// the webhooks answering there.
pub async fn desk_namespace(
    c: &Cluster,
    prefix: &str,
    opts: SimulatorOptions,
) -> (String, Apis, SimulatorHandle) {
    let client = c.client().await;
    let ns = crate::shared::namespace(&client, prefix).await;
    let sim = Simulator::start(client.clone(), opts.within(&ns));
    wait_webhooks_active(c, &ns).await;
    (ns.clone(), Apis::new(&client, &ns), sim)
}

/// The apiserver picks up a new webhook configuration a moment after it is written; waits
/// until a server-side dry run in `ns` comes back defaulted by our mutating webhook.
pub async fn wait_webhooks_active(c: &Cluster, ns: &str) {
    let probe = desk_yaml(ns, "probe", "{}");
    eventually(Duration::from_secs(30), "webhooks active", || async {
        let out = c
            .kubectl()
            .apply(&probe, &["--dry-run=server", "-o", "json"])
            .ok()?;
        (out.success && out.stdout.contains("vm-cleanup")).then_some(())
    })
    .await;
}

/// A TLS client that trusts exactly the CAs in `ca_pem` (the webhook Secret's `ca.crt`),
/// as the apiserver does with a caBundle.
pub fn webhook_tls_client(ca_pem: &str) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in cyberdesk_operator::certs::tls::certs_from_pem(ca_pem).map_err(|e| e.to_string())? {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// The leaf certificate (DER) the webhook server at `addr` presents, from a handshake that
/// only succeeds when the leaf chains to a CA in `ca_pem` and is valid for 127.0.0.1.
pub async fn served_leaf(ca_pem: &str, addr: SocketAddr) -> Result<Vec<u8>, String> {
    let connector = webhook_tls_client(ca_pem)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name.to_owned(), tcp)
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .ok_or_else(|| "no certificate presented".to_string())
}
