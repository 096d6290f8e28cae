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
