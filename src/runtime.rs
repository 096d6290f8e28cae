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
use crate::config::RunConfig;
use crate::metrics::Metrics;
use crate::model::Cyberdesk;
use crate::readiness::Readiness;

/// Values `cyberdesk_reconcile_errors_total{error}` can take.
pub const ERROR_LABELS: &[&str] = &["kube", "template", "user_data", "serialization", "finalizer"];

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

    signal.cancelled().await;
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
