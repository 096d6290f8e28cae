//! One control plane per test binary, shared by its tests (each test uses its own
//! namespace). Started lazily by the first test that asks for it and stopped at exit.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, mpsc};

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::controlplane::{ControlPlane, Options};
use crate::kubectl::Kubectl;

/// What tests need to reach the shared control plane; cheap to clone.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// The cluster admin: kubectl, clients in assertions, installing manifests.
    pub kubeconfig: PathBuf,
    /// The operator's ServiceAccount identity; [`crate::harness::OperatorProcess`] always
    /// runs the operator with it.
    pub operator_kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub apiserver_url: String,
    pub dir: PathBuf,
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
