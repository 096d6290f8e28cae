//! Leader election over a Lease (kube-lease-manager): only the holder runs the controller.
//!
//! Followers re-check the Lease every `renew_every` (client-go's RetryPeriod) instead of
//! sleeping until it expires, so a Lease released on SIGTERM is taken over within about
//! that period. Losing the Lease ends the process (a fresh start is the only safe way to
//! rejoin); on shutdown the controller drains first and then the Lease is released; a
//! lost Lease stops it at once, without a drain.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

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
    let Some(first) = first_manager(&client, &cfg, retry, &shutdown).await? else {
        return Ok(());
    };
    let Some(manager) = wait_for_lease(first, &client, &cfg, retry, &shutdown).await else {
        return Ok(());
    };
    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "acquired the leader Lease; starting the controller");
    gauge.set(1);
    let stop = CancellationToken::new();
    let mut controller = tokio::spawn(lead(stop.clone()));
    let lost = hold_lease(&manager, &client, &cfg, &shutdown, &mut controller).await;
    if lost {
        // Another replica may hold the Lease any moment now: not one more pass from this
        // one (a drain here once claimed a pool VM for a desk the next leader claimed too).
        gauge.set(0);
        controller.abort();
        let _ = controller.await;
        tracing::error!(identity = %cfg.identity, "lost the leader Lease");
        return Err(LeaderError::Lost);
    }
    stop.cancel();
    let _ = controller.await;
    gauge.set(0);
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

/// The first manager, which proves the Lease is reachable. Fails fast on a Lease the
/// apiserver refuses (RBAC, namespace missing); waits out an apiserver that is away or
/// overloaded, as a replica started during an outage should not crash-loop through it.
/// `None` on shutdown.
async fn first_manager(
    client: &kube::Client,
    cfg: &LeaderConfig,
    retry: Duration,
    shutdown: &CancellationToken,
) -> Result<Option<LeaseManager>, LeaderError> {
    loop {
        let error = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            made = new_manager(client, cfg) => match made {
                Ok(manager) => return Ok(Some(manager)),
                Err(e) => e,
            },
        };
        if !is_transient(&error) {
            return Err(error);
        }
        tracing::warn!(identity = %cfg.identity, error = %error, "cannot reach the leader Lease yet; retrying");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

/// An apiserver that cannot be reached or answers 5xx/429 may come back; a 4xx answer is
/// a configuration to fix.
fn is_transient(error: &LeaderError) -> bool {
    match error {
        LeaderError::Setup {
            source: LeaseManagerError::KubeError(kube::Error::Api(status)),
            ..
        } => status.code >= 500 || status.code == 429,
        LeaderError::Setup {
            source: LeaseManagerError::KubeError(_),
            ..
        } => true,
        _ => false,
    }
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

/// Leader: keeps renewing until shutdown or the controller ends (false), or until the Lease
/// is lost (true): another holder took it, or it was not renewed for a lease duration
/// less one renewal period (the controller is stopped before a follower may take over).
///
/// The crate's `changed()` only returns when the holder changes or a request fails, so
/// a failed renewal says nothing about how long ago the last good one was: an outage
/// shorter than the Lease is ridden out, and the renewal time is read back from the Lease
/// itself (written with this replica's own clock) by a reader of its own, so a slow read
/// on a loaded apiserver delays the proof but never counts as a failure.
async fn hold_lease(
    manager: &LeaseManager,
    client: &kube::Client,
    cfg: &LeaderConfig,
    shutdown: &CancellationToken,
    controller: &mut tokio::task::JoinHandle<()>,
) -> bool {
    let retry = Duration::from_secs(cfg.renew_every_secs.max(1));
    let valid_for = Duration::from_secs(cfg.duration_secs);
    let step_down_after = valid_for.saturating_sub(retry).max(Duration::from_secs(1));
    let (proof_tx, proof) = tokio::sync::watch::channel(Some(SystemTime::now()));
    let reader = AbortOnDrop(tokio::spawn(read_renewals(
        Api::namespaced(client.clone(), &cfg.namespace),
        cfg.lease_name.clone(),
        cfg.identity.clone(),
        retry,
        proof_tx,
    )));
    let mut check = tokio::time::interval(Duration::from_secs(1).min(retry));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Kept across loop turns: dropping it mid-request could cancel a renewal each turn.
    let mut renew: Pin<Box<dyn Future<Output = Result<bool, LeaseManagerError>> + Send + '_>> =
        Box::pin(manager.changed());
    let lost = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break false,
            _ = &mut *controller => break false,
            result = &mut renew => match result {
                Ok(false) => break true,
                Ok(true) => renew = Box::pin(manager.changed()),
                Err(e) => {
                    tracing::warn!(identity = %cfg.identity, error = %e, "cannot renew the leader Lease; still leading while it is valid");
                    renew = Box::pin(async move {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        manager.changed().await
                    });
                }
            },
            _ = check.tick() => {
                let Some(renewed_at) = *proof.borrow() else {
                    tracing::warn!(identity = %cfg.identity, "the leader Lease names another holder");
                    break true;
                };
                if unrenewed_too_long(renewed_at, SystemTime::now(), step_down_after) {
                    tracing::warn!(identity = %cfg.identity, secs = step_down_after.as_secs(), "the leader Lease was not renewed in time; stepping down");
                    break true;
                }
            }
        }
    };
    drop(reader);
    lost
}

/// Reads the Lease every `every` and publishes this identity's latest renewal time, or
/// `None` once it names another holder. Read failures publish nothing: the time stands.
async fn read_renewals(
    leases: Api<Lease>,
    name: String,
    identity: String,
    every: Duration,
    proof: tokio::sync::watch::Sender<Option<SystemTime>>,
) {
    loop {
        match leases.get(&name).await {
            Ok(lease) => {
                let renewal = lease_renewal(&lease, &identity);
                proof.send_modify(|known| {
                    *known = match (*known, renewal) {
                        (Some(known), Some(at)) => Some(known.max(at)),
                        _ => None,
                    }
                });
                if renewal.is_none() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the leader Lease"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Aborts the task when dropped, so no reader outlives the leadership it checks.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// When this identity last renewed the Lease, or `None` when it names another holder.
/// A Lease without a renewal time (being taken over) counts as not renewed.
fn lease_renewal(lease: &Lease, identity: &str) -> Option<SystemTime> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    Some(
        spec.renew_time
            .as_ref()
            .map(|t| SystemTime::from(t.0))
            .unwrap_or(SystemTime::UNIX_EPOCH),
    )
}

/// True once the last renewal is `limit` or more in the past.
fn unrenewed_too_long(renewed_at: SystemTime, now: SystemTime, limit: Duration) -> bool {
    now.duration_since(renewed_at).unwrap_or(Duration::ZERO) >= limit
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed: Option<SystemTime>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed.and_then(|t| jiff::Timestamp::try_from(t).ok().map(MicroTime)),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_held_by_us_gives_its_renewal_time() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(lease_renewal(&lease(Some("a"), Some(at)), "a"), Some(at));
        assert_eq!(
            lease_renewal(&lease(Some("a"), None), "a"),
            Some(SystemTime::UNIX_EPOCH)
        );
    }

    #[test]
    fn a_lease_held_by_another_or_nobody_is_lost() {
        let at = SystemTime::now();
        assert_eq!(lease_renewal(&lease(Some("b"), Some(at)), "a"), None);
        assert_eq!(lease_renewal(&lease(None, None), "a"), None);
        assert_eq!(lease_renewal(&Lease::default(), "a"), None);
    }

    #[test]
    fn an_outage_shorter_than_the_limit_is_ridden_out() {
        let renewed = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let limit = Duration::from_secs(13);
        assert!(!unrenewed_too_long(
            renewed,
            renewed + Duration::from_secs(5),
            limit
        ));
        assert!(!unrenewed_too_long(
            renewed,
            renewed - Duration::from_secs(1),
            limit
        ));
        assert!(unrenewed_too_long(renewed, renewed + limit, limit));
    }
}
