//! Shared set-up and waits for the end-to-end tests.

use std::future::Future;
use std::time::{Duration, Instant};

use cyberdesk_operator::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance};
use kube::Api;

use crate::operator::operator_output;
use crate::shared::Cluster;

/// Installs the Cyberdesk CRD (from `cyberdesk-operator crd`), KubeVirt's CRDs and the
/// operator namespace. Idempotent.
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
    let _ = k.run(&["create", "namespace", "cyberdesk-system"], None);
    crate::kubevirt::install_kubevirt_crds(&c.client().await)
        .await
        .expect("kubevirt crds");
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
/// serving the webhooks (self-managed TLS, registered by URL), plus `extra` flags.
pub async fn webhook_operator(extra: &[&str]) -> (Cluster, crate::harness::SharedOperator) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    static OPERATOR: std::sync::OnceLock<Result<crate::harness::SharedOperator, String>> =
        std::sync::OnceLock::new();
    let c = crate::shared::cluster();
    INSTALLED.get_or_init(|| install_everything(&c)).await;
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let op = OPERATOR.get_or_init(|| {
        crate::harness::start_shared_operator(&c.kubeconfig, &c.dir, move |webhook| {
            let mut flags = vec![
                format!("--webhook-url=https://{webhook}"),
                "--extra-san=127.0.0.1".into(),
                "--leader-election=false".into(),
                "--policy-dir=/nonexistent".into(),
            ];
            flags.extend(extra);
            flags
        })
    });
    match op {
        Ok(op) => (c, op.clone()),
        Err(e) => panic!("operator: {e}"),
    }
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
