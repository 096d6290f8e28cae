//! Compact records of VMs and VMIs for the controller's caches. A typed object costs about
//! 1.3 KB even after trimming (its metadata struct, a key with four strings, a map per
//! `extra`); a record keeps only the values a pass reads, in boxed strings, under one
//! `namespace/name` key. A pass gets a typed object rebuilt from its record, so planning
//! and status code read VMs and VMIs as before.
//!
//! A rebuilt object carries only what [`VmRecord`] and [`VmiRecord`] keep; code that needs
//! another field must add it here first.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::ObjectMeta;
use kube::runtime::watcher;

use crate::model::kubevirt::{
    KubevirtCondition, VirtualMachineInstanceSpec, VirtualMachineInstanceStatus,
    VirtualMachineSpec, VirtualMachineStatus, VmiInterface,
};
use crate::model::{VirtualMachine, VirtualMachineInstance, names};

/// A kind whose cached form is a record.
pub trait Record: Sized + Send + Sync + 'static {
    type Kind: kube::Resource;
    fn of(obj: &Self::Kind) -> Self;
    fn rebuild(&self, namespace: &str, name: &str) -> Self::Kind;
}

fn boxed(s: &Option<String>) -> Option<Box<str>> {
    s.as_deref().map(Box::from)
}

fn unboxed(s: &Option<Box<str>>) -> Option<String> {
    s.as_deref().map(str::to_string)
}

/// An owner reference as far as ownership checks read it.
#[derive(Clone, Debug, PartialEq)]
struct Owner {
    kind: Box<str>,
    uid: Box<str>,
    controller: bool,
}

/// What a pass and the orphan sweep read of a VM.
#[derive(Clone, Debug, PartialEq)]
pub struct VmRecord {
    uid: Option<Box<str>>,
    created_at: Option<Time>,
    deleting_since: Option<Time>,
    owners: Box<[Owner]>,
    /// The desk-uid label, kept only for a VM without owner references (in another
    /// namespace than its desk): there it is the VM's ownership.
    desk_uid: Option<Box<str>>,
    run_strategy: Option<Box<str>>,
    running: Option<bool>,
    printable_status: Option<Box<str>>,
    ready: Option<bool>,
    created: Option<bool>,
    /// Only for a VM booted for a warm pool (`None` for every other VM, at no cost).
    pooled: Option<Box<Pooled>>,
}

/// What the pool controller and a claiming desk read of a pool VM.
#[derive(Clone, Debug, PartialEq)]
struct Pooled {
    pool: Box<str>,
    state: Option<Box<str>>,
    /// The claiming desk's name (its instance label), once claimed.
    instance: Option<Box<str>>,
    claimed_at: Option<Box<str>>,
}

impl Pooled {
    fn of(meta: &ObjectMeta) -> Option<Self> {
        let labels = meta.labels.as_ref()?;
        let label = |key: &str| labels.get(key).map(|v| Box::from(v.as_str()));
        Some(Self {
            pool: label(names::LABEL_POOL)?,
            state: label(names::LABEL_POOL_STATE),
            instance: label(names::LABEL_INSTANCE),
            claimed_at: meta
                .annotations
                .as_ref()
                .and_then(|a| a.get(names::ANNOTATION_CLAIMED_AT))
                .map(|v| Box::from(v.as_str())),
        })
    }

    /// Puts the labels and annotation back on a rebuilt VM.
    fn restore(&self, meta: &mut ObjectMeta) {
        let labels = meta.labels.get_or_insert_with(Default::default);
        labels.insert(names::LABEL_POOL.into(), self.pool.to_string());
        if let Some(state) = &self.state {
            labels.insert(names::LABEL_POOL_STATE.into(), state.to_string());
        }
        if let Some(instance) = &self.instance {
            labels.insert(names::LABEL_INSTANCE.into(), instance.to_string());
        }
        if let Some(at) = &self.claimed_at {
            meta.annotations =
                Some([(names::ANNOTATION_CLAIMED_AT.to_string(), at.to_string())].into());
        }
    }
}

impl Record for VmRecord {
    type Kind = VirtualMachine;

    fn of(vm: &VirtualMachine) -> Self {
        let meta = &vm.metadata;
        let owners: Box<[Owner]> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|o| Owner {
                kind: o.kind.as_str().into(),
                uid: o.uid.as_str().into(),
                controller: o.controller == Some(true),
            })
            .collect();
        let desk_uid = owners
            .is_empty()
            .then(|| meta.labels.as_ref()?.get(names::LABEL_DESK_UID))
            .flatten()
            .map(|uid| Box::from(uid.as_str()));
        let status = vm.status.as_ref();
        Self {
            uid: boxed(&meta.uid),
            created_at: meta.creation_timestamp.clone(),
            deleting_since: meta.deletion_timestamp.clone(),
            owners,
            desk_uid,
            run_strategy: boxed(&vm.spec.run_strategy),
            running: vm.spec.running,
            printable_status: status.and_then(|s| boxed(&s.printable_status)),
            ready: status.and_then(|s| s.ready),
            created: status.and_then(|s| s.created),
            pooled: Pooled::of(meta).map(Box::new),
        }
    }

    fn rebuild(&self, namespace: &str, name: &str) -> VirtualMachine {
        let owner_references = (!self.owners.is_empty()).then(|| {
            self.owners
                .iter()
                .map(|o| OwnerReference {
                    kind: o.kind.to_string(),
                    uid: o.uid.to_string(),
                    controller: o.controller.then_some(true),
                    ..Default::default()
                })
                .collect()
        });
        let labels = self
            .desk_uid
            .as_ref()
            .map(|uid| [(names::LABEL_DESK_UID.to_string(), uid.to_string())].into());
        let mut vm = VirtualMachine::new(
            name,
            VirtualMachineSpec {
                run_strategy: unboxed(&self.run_strategy),
                running: self.running,
                ..Default::default()
            },
        );
        vm.metadata = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: unboxed(&self.uid),
            creation_timestamp: self.created_at.clone(),
            deletion_timestamp: self.deleting_since.clone(),
            owner_references,
            labels,
            ..Default::default()
        };
        if let Some(pooled) = &self.pooled {
            pooled.restore(&mut vm.metadata);
        }
        let has_status =
            self.printable_status.is_some() || self.ready.is_some() || self.created.is_some();
        vm.status = has_status.then(|| VirtualMachineStatus {
            printable_status: unboxed(&self.printable_status),
            ready: self.ready,
            created: self.created,
            ..Default::default()
        });
        vm
    }
}

impl VmRecord {
    /// The warm pool the VM was booted for.
    pub fn pool(&self) -> Option<&str> {
        self.pooled.as_ref().map(|p| &*p.pool)
    }

    /// The desk that claimed this pool VM, by name.
    pub fn claimed_by(&self) -> Option<&str> {
        self.pooled.as_ref()?.instance.as_deref()
    }
}

/// What a pass reads of a VMI: its phase, readiness and first address.
#[derive(Clone, Debug, PartialEq)]
pub struct VmiRecord {
    uid: Option<Box<str>>,
    created_at: Option<Time>,
    deleting_since: Option<Time>,
    phase: Option<Box<str>>,
    ready: bool,
    ip_address: Option<Box<str>>,
}

impl Record for VmiRecord {
    type Kind = VirtualMachineInstance;

    fn of(vmi: &VirtualMachineInstance) -> Self {
        let meta = &vmi.metadata;
        Self {
            uid: boxed(&meta.uid),
            created_at: meta.creation_timestamp.clone(),
            deleting_since: meta.deletion_timestamp.clone(),
            phase: vmi.phase().map(Box::from),
            ready: vmi.is_ready(),
            ip_address: vmi.ip_address().map(Box::from),
        }
    }

    fn rebuild(&self, namespace: &str, name: &str) -> VirtualMachineInstance {
        let mut vmi = VirtualMachineInstance::new(name, VirtualMachineInstanceSpec::default());
        vmi.metadata = ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            uid: unboxed(&self.uid),
            creation_timestamp: self.created_at.clone(),
            deletion_timestamp: self.deleting_since.clone(),
            ..Default::default()
        };
        let has_status = self.phase.is_some() || self.ready || self.ip_address.is_some();
        vmi.status = has_status.then(|| VirtualMachineInstanceStatus {
            phase: unboxed(&self.phase),
            conditions: self.ready.then(|| {
                vec![KubevirtCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]
            }),
            interfaces: self.ip_address.as_ref().map(|ip| {
                vec![VmiInterface {
                    ip_address: Some(ip.to_string()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        vmi
    }
}

fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into()
}

fn key_of<K: kube::Resource>(obj: &K) -> Option<Box<str>> {
    let meta = obj.meta();
    Some(key(meta.namespace.as_deref()?, meta.name.as_deref()?))
}

#[derive(Debug)]
struct Maps<R> {
    current: HashMap<Box<str>, R>,
    /// Filled during a relist and swapped in when it is done, as kube's reflector does.
    relisting: Option<HashMap<Box<str>, R>>,
}

/// Records of one kind, read by passes; filled by its [`RecordWriter`].
#[derive(Debug)]
pub struct RecordStore<R> {
    maps: Arc<RwLock<Maps<R>>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<R> Clone for RecordStore<R> {
    fn clone(&self) -> Self {
        Self {
            maps: self.maps.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// Applies watch events to a [`RecordStore`].
#[derive(Debug)]
pub struct RecordWriter<R> {
    maps: Arc<RwLock<Maps<R>>>,
    ready: tokio::sync::watch::Sender<bool>,
}

/// An empty store and the writer that fills it.
pub fn record_store<R: Record>() -> (RecordStore<R>, RecordWriter<R>) {
    let maps = Arc::new(RwLock::new(Maps {
        current: HashMap::new(),
        relisting: None,
    }));
    let (tx, rx) = tokio::sync::watch::channel(false);
    (
        RecordStore {
            maps: maps.clone(),
            ready: rx,
        },
        RecordWriter { maps, ready: tx },
    )
}

impl<R: Record> RecordWriter<R> {
    pub fn apply(&mut self, event: &watcher::Event<R::Kind>) {
        // A poisoned lock only means a reader panicked; the maps themselves are whole.
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        match event {
            watcher::Event::Apply(obj) => {
                if let Some(k) = key_of(obj) {
                    maps.current.insert(k, R::of(obj));
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some(k) = key_of(obj) {
                    maps.current.remove(&k);
                }
            }
            watcher::Event::Init => maps.relisting = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some(k), Some(relisting)) = (key_of(obj), maps.relisting.as_mut()) {
                    relisting.insert(k, R::of(obj));
                }
            }
            watcher::Event::InitDone => {
                if let Some(mut listed) = maps.relisting.take() {
                    listed.shrink_to_fit();
                    maps.current = listed;
                }
                drop(maps);
                self.ready.send_replace(true);
            }
        }
    }
}

impl<R: Record> RecordStore<R> {
    /// The object `name` in `namespace`, rebuilt from its record.
    pub fn get(&self, namespace: &str, name: &str) -> Option<R::Kind> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        maps.current
            .get(&key(namespace, name))
            .map(|r| r.rebuild(namespace, name))
    }

    /// Every object, rebuilt (for the orphan sweep's periodic look).
    pub fn all(&self) -> Vec<R::Kind> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        maps.current
            .iter()
            .filter_map(|(k, r)| {
                let (namespace, name) = k.split_once('/')?;
                Some(r.rebuild(namespace, name))
            })
            .collect()
    }

    /// The objects in `namespace` whose record `keep` accepts, rebuilt; only those are.
    pub fn select(&self, namespace: &str, keep: impl Fn(&R) -> bool) -> Vec<R::Kind> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        maps.current
            .iter()
            .filter_map(|(k, r)| {
                let (ns, name) = k.split_once('/')?;
                (ns == namespace && keep(r)).then(|| r.rebuild(ns, name))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        maps.current.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list is in. `Err` when the writer is gone first.
    pub async fn wait_until_ready(&self) -> Result<(), tokio::sync::watch::error::RecvError> {
        let mut ready = self.ready.clone();
        ready.wait_for(|r| *r).await.map(drop)
    }
}

#[cfg(test)]
mod tests;
