//! The controllers' shared parts for unit tests, over a client from `crate::test_client`:
//! caches that are filled, the built-in template, and fresh metrics. No apiserver.

use std::sync::Arc;

use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher;

use crate::catalog::Catalog;
use crate::controller::cache::{Caches, Lists};
use crate::controller::context::Shared;
use crate::controller::records::{RecordWriter, VmRecord, VmiRecord, record_store};
use crate::events::{Announcer, Lanes};
use crate::metrics::Metrics;
use crate::model::{Placement, VirtualMachine, VirtualMachineInstance};
pub use crate::test_client::{Asked, Log, client, refusal};

/// The shared parts over `client`, and what keeps them alive.
pub struct World {
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    // Held so the caches stay filled and events have somewhere to go.
    _vms: RecordWriter<VmRecord>,
    _vmis: RecordWriter<VmiRecord>,
    _pool_lists: tokio::sync::watch::Sender<u64>,
    _lanes: Lanes,
}

/// Shared parts whose caches are filled and empty: a pass reads nothing from them.
pub fn world(client: kube::Client) -> World {
    let metrics = Metrics::new("test", crate::controller::error::ERROR_LABELS).expect("metrics");
    let (desks, _) = reflector::store();
    let (vms, mut vm_writer) = record_store::<VmRecord>();
    let (vmis, mut vmi_writer) = record_store::<VmiRecord>();
    vm_writer.apply(&watcher::Event::<VirtualMachine>::Init);
    vm_writer.apply(&watcher::Event::<VirtualMachine>::InitDone);
    vmi_writer.apply(&watcher::Event::<VirtualMachineInstance>::Init);
    vmi_writer.apply(&watcher::Event::<VirtualMachineInstance>::InitDone);
    let (pools, _) = reflector::store();
    let (pool_lists, lists) = Lists::new();
    pool_lists.send_replace(1);
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    let (announcer, lanes) =
        Announcer::start(client.clone(), reporter, metrics.events_dropped.clone());
    let shared = Arc::new(Shared {
        client,
        announcer,
        metrics: metrics.clone(),
        templates: Catalog::fixed("cyberdesk-system", "cyberdesk-vm-template", Vec::new()),
        caches: Caches::new(desks, vms, vmis).with_pools(pools, lists),
        placement: Placement::default(),
    });
    World {
        shared,
        metrics,
        _vms: vm_writer,
        _vmis: vmi_writer,
        _pool_lists: pool_lists,
        _lanes: lanes,
    }
}
