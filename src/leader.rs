//! Leader election over a Lease (kube-lease-manager): only the holder runs the controller.
//!
//! Followers re-check the Lease every `renew_every` (client-go's RetryPeriod) instead of
//! sleeping until it expires, so a Lease released on SIGTERM is taken over within about
//! that period. Losing the Lease ends the process (a fresh start is the only safe way to
//! rejoin); on shutdown the controller drains first and then the Lease is released.

use std::future::Future;
use std::time::{Duration, Instant};

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::names;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub duration_secs: u64,
    pub renew_every_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("cannot set up the leader Lease {namespace}/{name}: {source}")]
    Setup {
        namespace: String,
        name: String,
        source: LeaseManagerError,
    },
    #[error("lost the leader Lease; exiting so a fresh process can rejoin the election")]
    Lost,
}

/// Runs `lead(stop)` while this replica holds the Lease, until `shutdown`.
pub async fn run<F, Fut>(
    client: kube::Client,
    cfg: LeaderConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
    lead: F,
) -> Result<(), LeaderError>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let retry = Duration::from_secs(cfg.renew_every_secs.max(1));
    let gauge = metrics.leader.with_label_values(&[&cfg.identity]);
    // Fail fast on a Lease we cannot even read (RBAC, namespace missing).
    let first = new_manager(&client, &cfg).await?;
    let Some(manager) = wait_for_lease(first, &client, &cfg, retry, &shutdown).await else {
        return Ok(());
    };
    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "acquired the leader Lease; starting the controller");
    gauge.set(1);
    let stop = CancellationToken::new();
    let mut controller = tokio::spawn(lead(stop.clone()));
    let lost = hold_lease(&manager, &cfg, &shutdown, &mut controller).await;
    stop.cancel();
    let _ = controller.await;
    gauge.set(0);
    if lost {
        tracing::error!(identity = %cfg.identity, "lost the leader Lease");
        return Err(LeaderError::Lost);
    }
    match manager.release().await {
        Ok(()) => tracing::info!(identity = %cfg.identity, "released the leader Lease"),
        Err(e) => {
            tracing::warn!(error = %e, "could not release the leader Lease; it expires on its own")
        }
    }
    Ok(())
}

async fn new_manager(
    client: &kube::Client,
    cfg: &LeaderConfig,
) -> Result<LeaseManager, LeaderError> {
    // The holder renews when `grace` seconds are left, i.e. every (duration - grace) s.
    let grace = cfg
        .duration_secs
        .saturating_sub(cfg.renew_every_secs.max(1))
        .max(1);
    LeaseManagerBuilder::new(client.clone(), &cfg.lease_name)
        .with_namespace(&cfg.namespace)
        .with_identity(&cfg.identity)
        .with_duration(cfg.duration_secs)
        .with_grace(grace)
        .with_field_manager(names::FIELD_MANAGER)
        .build()
        .await
        .map_err(|source| LeaderError::Setup {
            namespace: cfg.namespace.clone(),
            name: cfg.lease_name.clone(),
            source,
        })
}

/// Follower: every `retry`, reads the Lease afresh and tries to take it; returns the
/// manager that holds it, or `None` on shutdown. A fresh manager per attempt because the
/// crate trusts its cached copy until it expires and would miss a release.
async fn wait_for_lease(
    first: LeaseManager,
    client: &kube::Client,
    cfg: &LeaderConfig,
    retry: Duration,
    shutdown: &CancellationToken,
) -> Option<LeaseManager> {
    // The manager built at start (which proved the Lease is reachable) makes the first try.
    let mut first = Some(first);
    loop {
        let reuse = first.take();
        let attempt = async {
            let manager = match reuse {
                Some(m) => m,
                None => new_manager(client, cfg).await.map_err(|e| e.to_string())?,
            };
            match tokio::time::timeout(retry, manager.changed()).await {
                Ok(Ok(true)) => Ok(Some(manager)),
                Ok(Ok(false)) | Err(_) => Ok(None),
                Ok(Err(e)) => Err(e.to_string()),
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = attempt => match result {
                Ok(Some(manager)) => return Some(manager),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(identity = %cfg.identity, error = %e, "leader election check failed; retrying");
                    tokio::time::sleep(retry).await;
                }
            },
        }
    }
}

/// Leader: keeps renewing until shutdown or the controller ends (false) or the Lease is
/// lost or cannot be renewed for a whole lease duration (true).
async fn hold_lease(
    manager: &LeaseManager,
    cfg: &LeaderConfig,
    shutdown: &CancellationToken,
    controller: &mut tokio::task::JoinHandle<()>,
) -> bool {
    let mut last_ok = Instant::now();
    let duration = Duration::from_secs(cfg.duration_secs);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = &mut *controller => return false,
            result = manager.changed() => match result {
                Ok(false) => return true,
                Ok(true) => last_ok = Instant::now(),
                Err(e) => {
                    tracing::warn!(identity = %cfg.identity, error = %e, "cannot renew the leader Lease");
                    if last_ok.elapsed() >= duration {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
}
