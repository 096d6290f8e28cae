//! `cyberdesk-operator run`: wires the servers and the controller to one shutdown signal.
//!
//! Shutdown order: the first signal turns `/readyz` false, waits `--shutdown-delay-secs`
//! so load balancers stop sending new admissions, then stops the servers, which finish the
//! requests already in flight, and exits 0.

use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::controller::{self, ControllerConfig};
use crate::leader::{self, LeaderConfig};
use crate::config::RunConfig;
use crate::metrics::Metrics;
use crate::model::Cyberdesk;
use crate::readiness::Readiness;

/// Values `cyberdesk_reconcile_errors_total{error}` can take.
pub const ERROR_LABELS: &[&str] = controller::error::ERROR_LABELS;

pub const GATE_ADMIN: &str = "admin";
pub const GATE_CACHES: &str = "caches";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot configure the Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
}

pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    let signal = crate::shutdown::on_signal().map_err(RunError::Signals)?;
    let client = kube::Client::try_default().await.map_err(RunError::KubeConfig)?;
    let metrics = Metrics::new(&cfg.pod_name, ERROR_LABELS)?;
    let readiness = Readiness::default();
    readiness.register(GATE_ADMIN);
    readiness.register(GATE_CACHES);

    // Servers stop on `stop`, which fires only after the shutdown delay.
    let stop = CancellationToken::new();
    let app = admin::router(metrics.clone(), readiness.clone());
    let (admin_addr, admin_server) = admin::bind(cfg.admin_addr, app, stop.clone()).await?;
    let admin_task = tokio::spawn(admin_server);
    readiness.open(GATE_ADMIN);
    tracing::info!(addr = %admin_addr, "admin server listening");

    let cache_task = tokio::spawn(sync_caches(client.clone(), readiness.clone(), stop.clone()));
    // The controller stops at the first signal (not after the endpoint delay), so the Lease
    // is released and a peer takes over as soon as in-flight reconciles are done.
    let controller_task = tokio::spawn(run_controller(client.clone(), cfg.clone(), metrics.clone(), signal.clone()));

    let mut controller_task = controller_task;
    let leader_failed = tokio::select! {
        _ = signal.cancelled() => None,
        ended = &mut controller_task => Some(ended),
    };
    if let Some(ended) = leader_failed {
        // Losing the Lease (or failing to set it up) ends the process: no half-leader.
        readiness.begin_shutdown();
        stop.cancel();
        let _ = tokio::time::timeout(cfg.shutdown_timeout(), admin_task).await;
        return match ended {
            Ok(Err(e)) => Err(RunError::Leader(e)),
            _ => Ok(()),
        };
    }
    readiness.begin_shutdown();
    tracing::info!(delay_secs = cfg.shutdown_delay_secs, "not ready; draining");
    tokio::time::sleep(Duration::from_secs(cfg.shutdown_delay_secs)).await;
    stop.cancel();

    let timeout = cfg.shutdown_timeout();
    let drained = tokio::time::timeout(timeout, async {
        if let Ok(Err(e)) = admin_task.await {
            tracing::warn!(error = %e, "admin server ended with an error");
        }
        let _ = cache_task.await;
        if let Ok(Err(e)) = controller_task.await {
            tracing::warn!(error = %e, "controller ended with an error");
        }
    })
    .await;
    match drained {
        Ok(()) => {
            tracing::info!("shutdown complete");
            Ok(())
        }
        Err(_) => Err(RunError::ShutdownTimeout(timeout)),
    }
}

/// The controller, on the leader only (or always, with leader election off). Returns
/// when `stop` fires, or with an error when the Lease is lost.
async fn run_controller(
    client: kube::Client,
    cfg: RunConfig,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), crate::leader::LeaderError> {
    let controller_cfg = ControllerConfig {
        namespace: cfg.namespace.clone(),
        template_configmap: cfg.template_configmap.clone(),
        default_timeout_ms: cfg.default_timeout_ms,
    };
    let identity = cfg.pod_name.clone();
    if !cfg.leader_election {
        metrics.leader.with_label_values(&[&identity]).set(1);
        controller::run(client, controller_cfg, metrics, identity, stop).await;
        return Ok(());
    }
    let leader_cfg = LeaderConfig {
        namespace: cfg.namespace.clone(),
        lease_name: cfg.lease_name.clone(),
        identity: identity.clone(),
        duration_secs: cfg.lease_duration_secs,
        renew_every_secs: cfg.lease_renew_secs,
    };
    let lead_client = client.clone();
    let lead_metrics = metrics.clone();
    leader::run(client, leader_cfg, metrics, stop, move |leader_stop| {
        controller::run(lead_client.clone(), controller_cfg.clone(), lead_metrics.clone(), identity.clone(), leader_stop)
    })
    .await
}

/// Watches Cyberdesks until the initial list is in, then opens the caches gate. A missing
/// CRD or an unreachable apiserver keeps the gate closed and is retried with backoff.
async fn sync_caches(client: kube::Client, readiness: Readiness, stop: CancellationToken) {
    let api: Api<Cyberdesk> = Api::all(client);
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|event| async move {
            if let Err(e) = event {
                tracing::warn!(error = %e, "Cyberdesk watch failed; retrying");
            }
        });
    let gate = async {
        if reader.wait_until_ready().await.is_ok() {
            readiness.open(GATE_CACHES);
            tracing::info!("caches synced");
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = stream => {}
        _ = gate => {}
        _ = stop.cancelled() => {}
    }
}
