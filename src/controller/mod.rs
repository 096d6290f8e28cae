//! The reconciler: Cyberdesk → VirtualMachine, status tracking, exact timeouts and
//! finalizer cleanup. Pure decisions live in plan/template/status/expiry; reconcile.rs
//! carries out the plan.

pub mod adoption;
pub mod cache;
pub mod claim;
pub mod error;
pub mod expiry;
pub mod finalizers;
pub mod initial_list;
pub mod orphans;
pub mod own_writes;
pub mod patch;
pub mod plan;
pub mod pool;
pub mod pool_plan;
pub mod pool_writes;
pub mod reconcile;
pub mod records;
pub mod render;
pub mod status;
pub mod status_hold;
pub mod takeover;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::ResourceExt;
use kube::runtime::controller::{Config as ControllerRuntimeConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

use crate::backoff::watch_backoff;
use crate::catalog::Catalog;
use crate::controller::cache::{
    Caches, recorded_watch, trim_desk, trim_pool, trim_vm, trim_vmi, trimmed_watch,
};
use crate::controller::records::{VmRecord, VmiRecord};
use crate::events::Announcer;
use crate::metrics::Metrics;
use crate::model::{
    Cyberdesk, CyberdeskPhase, CyberdeskPool, Placement, VirtualMachineInstance, names,
};
pub use reconcile::{Context, ControllerConfig};

/// Pool passes in flight at once (pools are few; each pass may boot several VMs).
const POOL_CONCURRENCY: u16 = 4;
/// Longest wait for in-flight reconciles after the stop signal.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Longest wait, after the controller stopped, for queued events to be published.
const EVENT_FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Label selector for the VMs and VMIs this operator made.
fn managed_selector() -> String {
    format!("{}={}", names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE)
}

/// VM/VMI → its Cyberdesk, by the `cyberdesk-instance` label, in the namespace its
/// desk-namespace label names (the VM's own when it has none: VMs made before that label).
fn owner_desk<K: kube::Resource>(obj: K) -> Option<ObjectRef<Cyberdesk>> {
    let meta = obj.meta();
    let labels = meta.labels.as_ref()?;
    let desk = labels.get(names::LABEL_INSTANCE)?;
    let ns = labels
        .get(names::LABEL_DESK_NAMESPACE)
        .or(meta.namespace.as_ref())?;
    Some(ObjectRef::new(desk).within(ns))
}

/// The VMs (or VMIs) to watch: in the one VM namespace when there is one, so a Role there
/// is all the RBAC it takes; else in every namespace.
fn kubevirt_api<K>(client: &kube::Client, placement: &Placement) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match &placement.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
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
    // Any change to a template may fix (or break) a desk or pool: re-check them all.
    let template_changes = templates.changes();
    let pool_template_changes = templates.changes();

    let reporter = Reporter {
        controller: names::FIELD_MANAGER.into(),
        instance: Some(identity),
    };
    // One watch per kind, trimmed before it is cached; reconciles read these stores.
    let desk_api = Api::<Cyberdesk>::all(client.clone());
    let streaming = initial_list::streams(cfg.initial_list, || {
        initial_list::apiserver_streams(&desk_api)
    })
    .await;
    let strategy = if streaming { "stream" } else { "list" };
    tracing::info!(initial_list = %strategy, "the caches fill by this initial list");
    let config = |base| initial_list::configure(base, streaming);
    let selector = managed_selector();
    let (desks, desk_events, desk_lists) =
        trimmed_watch(desk_api, config(watcher::Config::default()), trim_desk);
    let (vms, vm_events, vm_lists) = recorded_watch::<VmRecord>(
        kubevirt_api(&client, &cfg.placement),
        config(watcher::Config::default().labels(&selector)),
        trim_vm,
    );
    let (vmis, vmi_events, vmi_lists) = recorded_watch::<VmiRecord>(
        kubevirt_api(&client, &cfg.placement),
        config(watcher::Config::default().labels(&selector)),
        trim_vmi,
    );
    // Warm pools. Desks read them (a cold VM comes from its pool's template); the pool
    // controller runs only where every VM lives beside its desk, as pool VMs do.
    let (pools, pool_events, pool_lists) = trimmed_watch(
        Api::<CyberdeskPool>::all(client.clone()),
        config(watcher::Config::default()),
        trim_pool,
    );
    let caches =
        Caches::new(desks.clone(), vms, vmis).with_pools(pools.clone(), pool_lists.clone());
    // A relist is followed by a pass over everything its fresh cache holds (`cache::Lists`
    // says why). Desks read desks, VMs and VMIs; pools (below) read pools and VMs.
    let desk_relists = futures::stream::select(
        desk_lists.relists(),
        futures::stream::select(vm_lists.relists(), vmi_lists.relists()),
    );
    let (pool_triggers, pool_watch) = if cfg.placement.namespace.is_none() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let relists = futures::stream::select(pool_lists.relists(), vm_lists.relists());
        (Some(tx), Ok((pools, pool_events, rx, relists)))
    } else {
        (None, Err(pool_events))
    };
    // A pool VM's event (booted, claimed, gone) is its pool's business too.
    let vm_events = vm_events.inspect_ok(move |vm| {
        if let (Some(tx), Some(pool), Some(ns)) = (&pool_triggers, vm.pool(), vm.namespace()) {
            let _ = tx.unbounded_send(ObjectRef::new(pool).within(&ns));
        }
    });
    // A claimed pool VM's VMI was started before the claim and carries no desk label: map
    // it through its VM, which does.
    let vm_records = caches.vms.clone();
    let vmi_desk = move |vmi: VirtualMachineInstance| {
        let ns = vmi.namespace()?;
        let name = vmi.name_any();
        owner_desk(vmi).or_else(|| {
            let vm = vm_records.get(&ns, &name)?;
            vm.pool()?;
            owner_desk(vm)
        })
    };
    // Bounded, so a thousand desks falling due do not mean a thousand requests in flight.
    let concurrency = cfg.max_concurrent_reconciles;
    let (announcer, event_lanes) =
        Announcer::start(client.clone(), reporter, metrics.events_dropped.clone());
    // VMs beside their desks carry an ownerReference; only those elsewhere need the sweep.
    let sweep = cfg.placement.namespace.is_some().then(|| {
        tokio::spawn(orphans::sweep(
            client.clone(),
            caches.clone(),
            cfg.orphan_grace,
            metrics.clone(),
            announcer.clone(),
            stop.clone(),
        ))
    });
    // Built only when there is something to deliver (the start-up checked it can be).
    let http = cfg
        .notify
        .any()
        .then(|| crate::notify::http::HttpClient::new(cfg.notify.attempt_timeout))
        .and_then(|built| {
            built
                .inspect_err(|e| tracing::error!(error = %e, "notifications are off"))
                .ok()
        });
    let notifier = http.map(|http| {
        crate::notify::Notifier::new(
            client.clone(),
            http,
            cfg.notify.clone(),
            desks.clone(),
            metrics.clone(),
            announcer.clone(),
            stop.clone(),
        )
    });
    let ctx = Arc::new(Context {
        client: client.clone(),
        notifier,
        announcer,
        metrics: metrics.clone(),
        templates,
        cfg,
        caches: caches.clone(),
        own_writes: Default::default(),
        status_clock: Default::default(),
        failures: Default::default(),
        pool_vms: Default::default(),
        pool_failures: Default::default(),
        pool_writes: Default::default(),
    });
    let gauges = tokio::spawn(count_from_caches(caches, metrics, stop.clone()));
    let pool_ctx = ctx.clone();

    let controller = Controller::for_stream(desk_events, desks)
        .with_config(ControllerRuntimeConfig::default().concurrency(concurrency))
        .trigger_backoff(watch_backoff())
        .watches_stream(vm_events, owner_desk)
        .watches_stream(vmi_events, vmi_desk)
        .reconcile_all_on(template_changes)
        .reconcile_all_on(desk_relists)
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
    let pools = async {
        let (store, events, triggers, relists) = match pool_watch {
            Ok(controlled) => controlled,
            // No pool controller: the watch only keeps the store the desks read.
            Err(events) => {
                events
                    .take_until(stop.cancelled())
                    .for_each(|_| async {})
                    .await;
                return;
            }
        };
        Controller::for_stream(events, store)
            .with_config(ControllerRuntimeConfig::default().concurrency(POOL_CONCURRENCY))
            .trigger_backoff(watch_backoff())
            .reconcile_on(triggers)
            .reconcile_all_on(pool_template_changes)
            .reconcile_all_on(relists)
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(pool::reconcile, pool::error_policy, pool_ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "pool controller event");
                }
            })
            .await;
    };
    tokio::select! {
        _ = futures::future::join(controller, pools) => {}
        _ = drain_limit => tracing::warn!(limit = ?DRAIN_LIMIT, "controller did not drain in time; stopping anyway"),
    }
    gauges.abort();
    if let Some(sweep) = sweep {
        // Awaited so its Announcer is gone before the lanes are flushed.
        sweep.abort();
        let _ = sweep.await;
    }
    // The controller (and with it the last Announcer) is gone: publish what is queued.
    event_lanes.flush(EVENT_FLUSH_LIMIT).await;
    tracing::info!("controller stopped");
}

/// How often the cache-derived gauges are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(5);

/// Keeps `cyberdesk_active_vms` (and its old name) and `cyberdesk_desks{phase}` current from the caches,
/// without a request to the apiserver.
async fn count_from_caches(caches: Caches, metrics: Metrics, stop: CancellationToken) {
    loop {
        let vms = caches.vms.len() as i64;
        metrics.active_vms.set(vms);
        metrics.active_vm_count.set(vms);
        let mut by_phase = [0i64; CyberdeskPhase::ALL.len()];
        for desk in caches.desks.state() {
            let phase = desk
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(CyberdeskPhase::Pending);
            if let Some(i) = CyberdeskPhase::ALL.iter().position(|p| *p == phase) {
                by_phase[i] += 1;
            }
        }
        for (phase, n) in CyberdeskPhase::ALL.iter().zip(by_phase) {
            metrics.desks.with_label_values(&[phase.as_str()]).set(n);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(GAUGE_PERIOD) => {}
        }
    }
}
