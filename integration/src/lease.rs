//! The leader-election Lease as a user reads it: who holds it and how often it changed
//! hands, so failover tests prove a handover rather than infer it from metrics.

use std::time::Duration;

use cyberdesk_operator::model::names;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::wait::eventually;

/// The Lease's holder and its `leaseTransitions` count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holding {
    pub holder: Option<String>,
    pub transitions: i32,
}

/// The operator's Lease in its default namespace; `None` before any replica created it.
/// A failed read panics: it must not read as "nobody holds it".
pub async fn holding(client: &kube::Client) -> Option<Holding> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), names::DEFAULT_NAMESPACE);
    let lease = leases
        .get_opt(names::LEASE_NAME)
        .await
        .unwrap_or_else(|e| panic!("reading the Lease {}: {e}", names::LEASE_NAME))?;
    let spec = lease.spec.unwrap_or_default();
    Some(Holding {
        holder: spec.holder_identity,
        transitions: spec.lease_transitions.unwrap_or(0),
    })
}

/// Waits until `identity` holds the Lease, returning what the Lease then says.
pub async fn wait_holder(client: &kube::Client, identity: &str, within: Duration) -> Holding {
    let what = format!("{identity} holding the Lease");
    eventually(within, &what, || async {
        holding(client)
            .await
            .filter(|h| h.holder.as_deref() == Some(identity))
    })
    .await
}
