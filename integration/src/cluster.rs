//! The cluster side of a test: one control plane per test binary, shared by its tests (each
//! test uses its own namespace), started lazily by the first test that asks for it and
//! stopped at exit; and installing what the operator needs into it, from the shipped files.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controlplane::{ControlPlane, Options};
use crate::kubectl::Kubectl;
use crate::workspace::{operator_output, repo_path};

/// What tests need to reach the shared control plane; cheap to clone.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The cluster admin: kubectl, clients in assertions, installing manifests.
    pub kubeconfig: PathBuf,
    /// The operator's ServiceAccount identity; [`crate::operator::OperatorProcess`] always
    /// runs the operator with it.
    pub operator_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub apiserver_url: String,
    pub dir: PathBuf,
    /// The apiserver's audit log, when it writes one (benchmarks).
    pub audit_log: Option<PathBuf>,
}

static RUNNING: Mutex<Option<ControlPlane>> = Mutex::new(None);
static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

extern "C" fn stop_at_exit() {
    if let Ok(mut guard) = RUNNING.lock() {
        guard.take();
    }
}

fn start() -> Result<Cluster, String> {
    let (tx, rx) = mpsc::channel();
    // The children get SIGKILL when the thread that spawned them exits, so spawn them from
    // a thread that lives as long as the test binary.
    std::thread::Builder::new()
        .name("controlplane-keeper".into())
        .spawn(move || {
            let result = ControlPlane::start(&Options::default()).map(|cp| {
                let cluster = Cluster::of(&cp);
                if let Ok(mut guard) = RUNNING.lock() {
                    *guard = Some(cp);
                }
                // SAFETY: registering a plain extern "C" fn with no captured state.
                unsafe { libc::atexit(stop_at_exit) };
                cluster
            });
            let _ = tx.send(result.map_err(|e| e.to_string()));
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| format!("could not start the keeper thread: {e}"))?;
    rx.recv()
        .map_err(|e| format!("control plane keeper died: {e}"))?
}

/// The shared control plane; panics with the launcher's message when it cannot start,
/// which is what a test should do.
pub fn cluster() -> Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(c) => c.clone(),
        Err(e) => panic!("control plane did not start: {e}"),
    }
}

impl Cluster {
    /// The handle for a control plane the caller owns.
    pub fn of(cp: &ControlPlane) -> Self {
        Cluster {
            kubeconfig: cp.kubeconfig_path().to_path_buf(),
            operator_kubeconfig: cp.operator_kubeconfig_path().to_path_buf(),
            kubectl: cp.kubectl_path().to_path_buf(),
            apiserver_url: cp.apiserver_url(),
            dir: cp.dir().to_path_buf(),
            audit_log: cp.audit_log_path(),
        }
    }

    /// kubectl as the cluster admin.
    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubectl, &self.kubeconfig)
    }

    /// kubectl as the operator's ServiceAccount: to check what the shipped RBAC grants it.
    pub fn operator_kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubectl, &self.operator_kubeconfig)
    }

    /// A fresh client (one per test: clients are bound to the runtime that made them).
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("kubeconfig valid");
        kube::Client::try_from(config).expect("client builds")
    }
}

/// Creates a namespace named `<prefix>-<n>` and returns its name. Namespaces are never
/// deleted: nothing would finalize them without kube-controller-manager.
pub async fn namespace(client: &kube::Client, prefix: &str) -> String {
    use k8s_openapi::api::core::v1::Namespace;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name}
    }))
    .expect("namespace literal");
    kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
        .expect("create namespace");
    name
}

/// The shipped files that give the operator its identity and rights.
pub const OPERATOR_RBAC: [&str; 4] = [
    "manifests/base/serviceaccount.yaml",
    "manifests/base/rbac.yaml",
    "manifests/base/rbac-kubevirt.yaml",
    "manifests/base/rbac-webhook-ca.yaml",
];

/// `kubectl apply` of `yaml` as the cluster admin; panics with kubectl's words when refused.
pub fn apply(c: &Cluster, yaml: &str) {
    let out = c.kubectl().apply(yaml, &[]).expect("kubectl");
    assert!(out.success, "kubectl apply failed: {}", out.stderr);
}

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
    install_apis(c).await;
    install_operator_rbac(c);
}

/// The Cyberdesk CRD (from `cyberdesk-operator crd`), KubeVirt's CRDs and its VM admission
/// stand-in: the APIs, without any rights for the operator. Idempotent.
pub async fn install_apis(c: &Cluster) {
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
                "crd/cyberdeskpools.cyberdesk.io",
            ],
            None,
        )
        .expect("kubectl");
    assert!(waited.success, "{}", waited.stderr);
    crate::kubevirt::install_kubevirt_crds(&c.client().await)
        .await
        .expect("kubevirt crds");
    // KubeVirt's API refuses invalid VMs (virt-api); so does the stand-in.
    crate::kubevirt::install_vm_admission(&c.client().await)
        .await
        .expect("kubevirt VM admission");
}
