//! The two controllers (leader only): desks (`desk/`: Cyberdesk → VirtualMachine, status,
//! exact timeouts, cleanup, adoption of the previous operator's desks) and warm pools
//! (`pool/`: pools kept at size, and a desk's claim of a pool VM). Beside them the parts
//! both use: the caches and their records, rendering, ownership, patches, finalizers,
//! the orphan sweep and one reconcile wrapper (`pass.rs`). `run` wires them up.

pub mod announcement;
pub mod cache;
pub mod context;
pub mod desk;
pub mod error;
pub mod finalizers;
pub mod initial_list;
pub mod orphans;
pub mod ownership;
pub mod pass;
pub mod patch;
pub mod pool;
pub mod records;
pub mod render;
#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use kube::Api;
use kube::ResourceExt;
use kube::runtime::controller::{Config as ControllerRuntimeConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backoff::watch_backoff;
use crate::catalog::Catalog;
use crate::controller::cache::{
    Caches, recorded_watch, trim_desk, trim_pool, trim_vm, trim_vmi, trimmed_watch,
};
use crate::controller::context::Shared;
use crate::controller::desk::context::{DeskContext, DeskSettings};
use crate::controller::initial_list::InitialList;
use crate::controller::pool::context::PoolContext;
use crate::controller::records::{VmRecord, VmiRecord};
use crate::events::Announcer;
use crate::metrics::Metrics;
use crate::model::{
    Cyberdesk, CyberdeskPhase, CyberdeskPool, DeskNamespaces, Placement, VirtualMachine,
    VirtualMachineInstance, names,
};
use crate::notify::{Notifier, NotifierConfig};

/// The controllers' settings (from the flags).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub default_timeout_ms: i64,
    /// Passes in flight at once.
    pub max_concurrent_reconciles: u16,
    /// How the caches fill when their watches start.
    pub initial_list: InitialList,
    /// Where VMs live and how they are named.
    pub placement: Placement,
    /// How long a VM in the VM namespace whose desk is gone stays before it is deleted.
    pub orphan_grace: Duration,
    /// Keep the previous operator's `status.cyberdesk_create` block in step.
    pub legacy_status: bool,
    /// The namespaces desks are served (and adopted) in (`--desk-namespaces`).
    pub desk_namespaces: DeskNamespaces,
    /// What to tell the platform, and how.
    pub notify: NotifierConfig,
}

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

type Events<K> = BoxStream<'static, Result<K, watcher::Error>>;
type Triggers = BoxStream<'static, ()>;
/// Pools to look at again.
type PoolTriggers = BoxStream<'static, ObjectRef<CyberdeskPool>>;

/// The watches both controllers read, trimmed before they are cached.
struct Watches {
    caches: Caches,
    desks: Store<Cyberdesk>,
    desk_events: Events<Cyberdesk>,
    vm_events: Events<VirtualMachine>,
    vmi_events: Events<VirtualMachineInstance>,
    /// A relist of desks, VMs or VMIs: every desk is looked at again (`cache::Lists`).
    desk_relists: Triggers,
    pools: PoolWatch,
}

/// The pool watch: it drives the pool controller only where every VM lives beside its
/// desk, as pool VMs do; elsewhere it only keeps the store the desks read.
enum PoolWatch {
    Controlled {
        store: Store<CyberdeskPool>,
        events: Events<CyberdeskPool>,
        /// Pools whose VMs changed (booted, claimed, gone).
        members_changed: PoolTriggers,
        /// A relist of pools or VMs.
        relists: Triggers,
    },
    StoreOnly(Events<CyberdeskPool>),
}

/// How the caches fill: streamed when the flag says so or, for `auto`, the apiserver can.
async fn watch_config(
    client: &kube::Client,
    flag: InitialList,
) -> impl Fn(watcher::Config) -> watcher::Config {
    let desk_api = Api::<Cyberdesk>::all(client.clone());
    let streaming =
        initial_list::streams(flag, || initial_list::apiserver_streams(&desk_api)).await;
    let strategy = if streaming { "stream" } else { "list" };
    tracing::info!(initial_list = %strategy, "the caches fill by this initial list");
    move |base| initial_list::configure(base, streaming)
}

/// Starts the desk, VM, VMI and pool watches.
async fn start_watches(client: &kube::Client, cfg: &ControllerConfig) -> Watches {
    let config = watch_config(client, cfg.initial_list).await;
    let selector = managed_selector();
    let (desks, desk_events, desk_lists) = trimmed_watch(
        Api::<Cyberdesk>::all(client.clone()),
        config(watcher::Config::default()),
        trim_desk,
    );
    let (vms, vm_events, vm_lists) = recorded_watch::<VmRecord>(
        kubevirt_api(client, &cfg.placement),
        config(watcher::Config::default().labels(&selector)),
        trim_vm,
    );
    let (vmis, vmi_events, vmi_lists) = recorded_watch::<VmiRecord>(
        kubevirt_api(client, &cfg.placement),
        config(watcher::Config::default().labels(&selector)),
        trim_vmi,
    );
    // Warm pools. Desks read them (a cold VM comes from its pool's template).
    let (pools, pool_events, pool_lists) = trimmed_watch(
        Api::<CyberdeskPool>::all(client.clone()),
        config(watcher::Config::default()),
        trim_pool,
    );
    let caches =
        Caches::new(desks.clone(), vms, vmis).with_pools(pools.clone(), pool_lists.clone());
    // Desks read desks, VMs and VMIs; pools (below) read pools and VMs.
    let desk_relists = futures::stream::select(
        desk_lists.relists(),
        futures::stream::select(vm_lists.relists(), vmi_lists.relists()),
    );
    let (pool_triggers, pools) = if cfg.placement.namespace.is_none() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let relists = futures::stream::select(pool_lists.relists(), vm_lists.relists());
        let watch = PoolWatch::Controlled {
            store: pools,
            events: pool_events.boxed(),
            members_changed: rx.boxed(),
            relists: relists.boxed(),
        };
        (Some(tx), watch)
    } else {
        (None, PoolWatch::StoreOnly(pool_events.boxed()))
    };
    // A pool VM's event (booted, claimed, gone) is its pool's business too.
    let vm_events = vm_events.inspect_ok(move |vm| {
        if let (Some(tx), Some(pool), Some(ns)) = (&pool_triggers, vm.pool(), vm.namespace()) {
            let _ = tx.unbounded_send(ObjectRef::new(pool).within(&ns));
        }
    });
    Watches {
        caches,
        desks,
        desk_events: desk_events.boxed(),
        vm_events: vm_events.boxed(),
        vmi_events: vmi_events.boxed(),
        desk_relists: desk_relists.boxed(),
        pools,
    }
}

/// The notifier, when there is something to deliver (the start-up checked it can be).
fn start_notifier(
    shared: &Shared,
    cfg: &NotifierConfig,
    desks: Store<Cyberdesk>,
    stop: &CancellationToken,
) -> Option<Notifier> {
    if !cfg.any() {
        return None;
    }
    let http = crate::notify::http::HttpClient::new(cfg.attempt_timeout)
        .inspect_err(|e| tracing::error!(error = %e, "notifications are off"))
        .ok()?;
    Some(Notifier::new(
        shared.client.clone(),
        http,
        cfg.clone(),
        desks,
        shared.metrics.clone(),
        shared.announcer.clone(),
        stop.clone(),
    ))
}

/// The orphan sweep, where VMs live in another namespace than their desks (beside them,
/// VMs carry an ownerReference and Kubernetes collects them).
fn start_sweep(
    shared: &Shared,
    grace: Duration,
    stop: &CancellationToken,
) -> Option<JoinHandle<()>> {
    shared.placement.namespace.is_some().then(|| {
        tokio::spawn(orphans::sweep(
            shared.client.clone(),
            shared.caches.clone(),
            grace,
            shared.metrics.clone(),
            shared.announcer.clone(),
            stop.clone(),
        ))
    })
}

/// Runs the desk controller until `stop` (and its in-flight passes are done).
async fn run_desks(
    watches: DeskWatches,
    ctx: Arc<DeskContext>,
    template_changes: impl Stream<Item = ()> + Send + 'static,
    concurrency: u16,
    stop: CancellationToken,
) {
    // A claimed pool VM's VMI was started before the claim and carries no desk label: map
    // it through its VM, which does.
    let vm_records = ctx.shared.caches.vms.clone();
    let vmi_desk = move |vmi: VirtualMachineInstance| {
        let ns = vmi.namespace()?;
        let name = vmi.name_any();
        owner_desk(vmi).or_else(|| {
            let vm = vm_records.get(&ns, &name)?;
            vm.pool()?;
            owner_desk(vm)
        })
    };
    Controller::for_stream(watches.events, watches.desks)
        .with_config(ControllerRuntimeConfig::default().concurrency(concurrency))
        .trigger_backoff(watch_backoff())
        .watches_stream(watches.vm_events, owner_desk)
        .watches_stream(watches.vmi_events, vmi_desk)
        .reconcile_all_on(template_changes)
        .reconcile_all_on(watches.relists)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(pass::reconcile, pass::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

/// The desk controller's share of the watches.
struct DeskWatches {
    desks: Store<Cyberdesk>,
    events: Events<Cyberdesk>,
    vm_events: Events<VirtualMachine>,
    vmi_events: Events<VirtualMachineInstance>,
    relists: Triggers,
}

/// Runs the pool controller until `stop`, or, where it does not run, keeps the pool store
/// the desks read current.
async fn run_pools(
    watch: PoolWatch,
    ctx: Arc<PoolContext>,
    template_changes: impl Stream<Item = ()> + Send + 'static,
    stop: CancellationToken,
) {
    let (store, events, members_changed, relists) = match watch {
        PoolWatch::Controlled {
            store,
            events,
            members_changed,
            relists,
        } => (store, events, members_changed, relists),
        PoolWatch::StoreOnly(events) => {
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
        .reconcile_on(members_changed)
        .reconcile_all_on(template_changes)
        .reconcile_all_on(relists)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(pass::reconcile, pass::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "pool controller event");
            }
        })
        .await;
}

/// Runs both controllers until `stop`; in-flight reconciles finish first.
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
    let desk_template_changes = templates.changes();
    let pool_template_changes = templates.changes();
    let watches = start_watches(&client, &cfg).await;
    let reporter = Reporter {
        controller: names::FIELD_MANAGER.into(),
        instance: Some(identity),
    };
    let (announcer, event_lanes) =
        Announcer::start(client.clone(), reporter, metrics.events_dropped.clone());
    let shared = Arc::new(Shared {
        client,
        announcer,
        metrics,
        templates,
        caches: watches.caches.clone(),
        placement: cfg.placement.clone(),
    });
    let sweep = start_sweep(&shared, cfg.orphan_grace, &stop);
    let notifier = start_notifier(&shared, &cfg.notify, watches.desks.clone(), &stop);
    let settings = DeskSettings {
        default_timeout_ms: cfg.default_timeout_ms,
        legacy_status: cfg.legacy_status,
        desk_namespaces: cfg.desk_namespaces.clone(),
    };
    let desk_ctx = Arc::new(DeskContext::new(shared.clone(), settings, notifier));
    let pool_ctx = Arc::new(PoolContext::new(shared.clone()));
    let gauges = tokio::spawn(count_from_caches(
        shared.caches.clone(),
        shared.metrics.clone(),
        stop.clone(),
    ));
    // Every Announcer but the lanes' own must be gone before the lanes are flushed.
    drop(shared);
    let desk_watches = DeskWatches {
        desks: watches.desks,
        events: watches.desk_events,
        vm_events: watches.vm_events,
        vmi_events: watches.vmi_events,
        relists: watches.desk_relists,
    };
    tracing::info!(
        max_concurrent_reconciles = cfg.max_concurrent_reconciles,
        "starting the controller"
    );
    let desks = run_desks(
        desk_watches,
        desk_ctx,
        desk_template_changes,
        cfg.max_concurrent_reconciles,
        stop.clone(),
    );
    let pools = run_pools(watches.pools, pool_ctx, pool_template_changes, stop.clone());
    // kube's graceful shutdown waits for in-flight reconciles, but not while its watches are
    // failing (e.g. the CRD is missing); never let that hold the process hostage.
    let drain_limit = async {
        stop.cancelled().await;
        tokio::time::sleep(DRAIN_LIMIT).await;
    };
    tokio::select! {
        _ = futures::future::join(desks, pools) => {}
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
