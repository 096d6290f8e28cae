//! The reconciler: Cyberdesk → VirtualMachine, status tracking, exact timeouts and
//! finalizer cleanup. Pure decisions live in plan/template/status/expiry; reconcile.rs
//! carries out the plan.

pub mod error;
pub mod expiry;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod template;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::controller::{Config as ControllerRuntimeConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::backoff::watch_backoff;
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance, names};
pub use reconcile::{Context, ControllerConfig};

/// Desks reconciled at once; bounded so a thousand desks do not mean a thousand requests
/// in flight.
const CONCURRENCY: u16 = 32;
/// Longest wait for in-flight reconciles after the stop signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Label selector for the VMs and VMIs this operator made.
fn managed_selector() -> String {
    format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE)
}

/// VM/VMI → its Cyberdesk, by the `cyberdesk-instance` label.
fn owner_desk<K: kube::Resource>(obj: K) -> Option<ObjectRef<Cyberdesk>> {
    let meta = obj.meta();
    let desk = meta.labels.as_ref()?.get(names::LABEL_INSTANCE)?;
    Some(ObjectRef::new(desk).within(meta.namespace.as_deref()?))
}

/// Runs the controller until `stop`; in-flight reconciles finish first.
pub async fn run(
    client: kube::Client,
    cfg: ControllerConfig,
    templates: Catalog,
    metrics: Metrics,
    identity: String,
    stop: CancellationToken,
) {
    // A desk judged before the templates are listed would be told its template is missing.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = templates.wait_synced() => {}
    }
    // Any change to a template may fix (or break) a desk: re-check all desks.
    let template_changes = templates.changes();

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: names::FIELD_MANAGER.into(),
            instance: Some(identity),
        },
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder,
        metrics: metrics.clone(),
        templates,
        cfg,
        failures: Mutex::new(Default::default()),
    });
    let active = tokio::spawn(count_active_vms(client.clone(), metrics, stop.clone()));

    let selector = managed_selector();
    let controller = Controller::new(
        Api::<Cyberdesk>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(ControllerRuntimeConfig::default().concurrency(CONCURRENCY))
    .trigger_backoff(watch_backoff())
    .watches(
        Api::<VirtualMachine>::all(client.clone()),
        watcher::Config::default().labels(&selector),
        owner_desk,
    )
    .watches(
        Api::<VirtualMachineInstance>::all(client.clone()),
        watcher::Config::default().labels(&selector),
        owner_desk,
    )
    .reconcile_all_on(template_changes)
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(reconcile::reconcile, reconcile::error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "controller event");
        }
    });
    // kube's graceful shutdown waits for in-flight reconciles, but not while its watches are
    // failing (e.g. the CRD is missing); never let that hold the process hostage.
    let drain_limit = async {
        stop.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        _ = controller => {}
        _ = drain_limit => tracing::warn!(limit = ?DRAIN_LIMIT, "controller did not drain in time; stopping anyway"),
    }
    active.abort();
    tracing::info!("controller stopped");
}

/// Keeps `cyberdesk_active_vm_count` current with a cheap metadata list.
async fn count_active_vms(client: kube::Client, metrics: Metrics, stop: CancellationToken) {
    let vms: Api<VirtualMachine> = Api::all(client);
    let params = kube::api::ListParams::default().labels(&managed_selector());
    loop {
        if let Ok(list) = vms.list_metadata(&params).await {
            metrics.active_vms.set(list.items.len() as i64);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(15)) => {}
        }
    }
}
