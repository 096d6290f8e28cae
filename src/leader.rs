//! Leader election over a Lease (kube-lease-manager): only the holder runs the controller.
//! Losing the Lease ends the process (a fresh start is the only safe way to rejoin); on
//! shutdown the controller drains first and then the Lease is released so a peer takes
//! over at once instead of waiting for it to expire.

use std::future::Future;

use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
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
    // The holder renews when `grace` seconds are left, i.e. every (duration - grace) s.
    let grace = cfg
        .duration_secs
        .saturating_sub(cfg.renew_every_secs.max(1))
        .max(1);
    let manager = LeaseManagerBuilder::new(client, &cfg.lease_name)
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
        })?;
    let (mut is_leader, lease_task) = manager.watch().await;
    let gauge = metrics.leader.with_label_values(&[&cfg.identity]);
    let outcome = lead_while_holding(&mut is_leader, &cfg, &gauge, &shutdown, lead).await;
    // Dropping the receiver makes the lease task release the Lease and end.
    drop(is_leader);
    match lease_task.await {
        Ok(Ok(_)) => tracing::info!(identity = %cfg.identity, "released the leader Lease"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not release the leader Lease"),
        Err(e) => tracing::warn!(error = %e, "lease task failed"),
    }
    outcome
}

/// Waits for the Lease, runs the controller while it is held, and reports whether it was
/// lost (an error) or shutdown came first.
async fn lead_while_holding<F, Fut>(
    is_leader: &mut tokio::sync::watch::Receiver<bool>,
    cfg: &LeaderConfig,
    gauge: &prometheus::IntGauge,
    shutdown: &CancellationToken,
    lead: F,
) -> Result<(), LeaderError>
where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    while !*is_leader.borrow_and_update() {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = is_leader.changed() => if changed.is_err() { return Ok(()) },
        }
    }
    if shutdown.is_cancelled() {
        return Ok(());
    }
    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "acquired the leader Lease; starting the controller");
    gauge.set(1);
    let stop = CancellationToken::new();
    let mut controller = tokio::spawn(lead(stop.clone()));
    let lost = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            _ = &mut controller => break false,
            changed = is_leader.changed() => {
                if changed.is_err() || !*is_leader.borrow_and_update() {
                    break true;
                }
            }
        }
    };
    stop.cancel();
    let _ = controller.await;
    gauge.set(0);
    if lost {
        tracing::error!(identity = %cfg.identity, "lost the leader Lease");
        return Err(LeaderError::Lost);
    }
    Ok(())
}
