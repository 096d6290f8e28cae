//! `caches`: what each cached desk, VM and VMI costs the leader, counted in this process by
//! a counting allocator (bytes asked for, and allocations; the allocator's own overhead
//! per allocation comes on top). The objects are what a `Running` desk, its VM and its VMI
//! look like after trimming, stored the way the controller stores them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};

use cyberdesk_operator::controller::cache::{trim_desk, trim_vm, trim_vmi};
use cyberdesk_operator::controller::records::{Record, VmRecord, VmiRecord, record_store};
use cyberdesk_operator::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance};
use kube::runtime::{reflector, watcher};
use serde_json::json;

/// The system allocator, counting live bytes and allocations.
pub struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only counters move.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        BYTES.fetch_add(layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        BYTES.fetch_sub(layout.size() as isize, Relaxed);
        ALLOCATIONS.fetch_sub(1, Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> (isize, isize) {
    (BYTES.load(Relaxed), ALLOCATIONS.load(Relaxed))
}

const STAMP: &str = "2026-11-28T10:00:00.123Z";

fn desk(i: usize) -> Cyberdesk {
    let name = format!("scale-{i:05}");
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "lastTransitionTime": STAMP, "observedGeneration": 1})
    };
    let mut desk: Cyberdesk = serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": name, "namespace": "bench-scale", "uid": format!("0b4e28ba-2fa1-11d2-883f-{i:012}"),
            "resourceVersion": (100_000 + i).to_string(), "generation": 1,
            "creationTimestamp": "2026-11-28T10:00:00Z", "finalizers": ["cyberdesk.io/vm-cleanup"],
            "managedFields": [{"manager": "bench", "operation": "Update"}]},
        "spec": {"timeoutMs": 36_000_000},
        "status": {"phase": "Running", "virtualMachineRef": format!("cyberdesk-{name}"),
            "vmiPhase": "Running", "ipAddress": "10.0.12.34", "startTime": STAMP,
            "expiryTime": STAMP, "message": "the desktop is running", "observedGeneration": 1,
            "conditions": [
                condition("TemplateValid", "TemplateRendered", "the VM template renders"),
                condition("VirtualMachineCreated", "Created", &format!("VirtualMachine cyberdesk-{name} exists")),
                condition("Ready", "Running", "the desktop is ready"),
                condition("TimedOut", "NotExpired", "the timeout has not passed")]}
    }))
    .expect("desk fixture");
    trim_desk(&mut desk);
    desk
}

fn vm(i: usize) -> VirtualMachine {
    let mut vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": format!("cyberdesk-scale-{i:05}"), "namespace": "bench-scale",
            "uid": format!("1b4e28ba-2fa1-11d2-883f-{i:012}"), "resourceVersion": "1",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "labels": {"cyberdesk-instance": format!("scale-{i:05}"), "app.kubernetes.io/managed-by": "cyberdesk-operator"},
            "ownerReferences": [{"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                "name": format!("scale-{i:05}"), "uid": format!("0b4e28ba-2fa1-11d2-883f-{i:012}"),
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {}}}}},
        "status": {"printableStatus": "Running", "ready": true, "created": true}
    }))
    .expect("VM fixture");
    trim_vm(&mut vm);
    vm
}

fn vmi(i: usize) -> VirtualMachineInstance {
    let mut vmi: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": format!("cyberdesk-scale-{i:05}"), "namespace": "bench-scale",
            "uid": format!("2b4e28ba-2fa1-11d2-883f-{i:012}"), "resourceVersion": "1",
            "creationTimestamp": "2026-11-28T10:00:00Z",
            "labels": {"cyberdesk-instance": format!("scale-{i:05}")}},
        "spec": {},
        "status": {"phase": "Running", "nodeName": "node-1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": STAMP}],
            "interfaces": [{"name": "default", "ipAddress": "10.0.12.34",
                "ipAddresses": ["10.0.12.34"], "mac": "52:54:00:00:00:01"}]}
    }))
    .expect("VMI fixture");
    trim_vmi(&mut vmi);
    vmi
}

/// Bytes and allocations per object that `fill` leaves behind for `n` objects.
fn per_object(n: usize, fill: impl FnOnce() -> Box<dyn std::any::Any>) -> (isize, isize) {
    let (bytes, allocations) = live();
    let kept = fill();
    let (bytes_after, allocations_after) = live();
    drop(kept);
    (
        (bytes_after - bytes) / n as isize,
        (allocations_after - allocations) / n as isize,
    )
}

pub fn run(n: usize) {
    println!(
        "caches: {n} Running desks with their VMs and VMIs, trimmed and stored as the controller stores them (bytes asked of the allocator, per object)"
    );
    let desks: Vec<Cyberdesk> = (0..n).map(desk).collect();
    let vms: Vec<VirtualMachine> = (0..n).map(vm).collect();
    let vmis: Vec<VirtualMachineInstance> = (0..n).map(vmi).collect();
    let report = |what: &str, (bytes, allocations): (isize, isize)| {
        println!("  {what}: {bytes} bytes in {allocations} allocations");
    };
    report(
        "desk in kube's store (object and key)",
        per_object(n, || in_kube_store(&desks)),
    );
    report(
        "desk key alone (an ObjectRef, as in the store and the scheduler)",
        per_object(n, || {
            Box::new(
                desks
                    .iter()
                    .map(reflector::ObjectRef::from)
                    .collect::<Vec<_>>(),
            )
        }),
    );
    report("VM record", per_object(n, || in_records::<VmRecord>(&vms)));
    report(
        "VM as a trimmed object in kube's store (before records)",
        per_object(n, || in_kube_store(&unlabelled(&vms))),
    );
    report(
        "VMI record",
        per_object(n, || in_records::<VmiRecord>(&vmis)),
    );
    report(
        "VMI as a trimmed object in kube's store (before records)",
        per_object(n, || in_kube_store(&unlabelled(&vmis))),
    );
}

/// The objects without labels, as the VM and VMI stores kept them before records.
fn unlabelled<K: kube::Resource + Clone>(objs: &[K]) -> Vec<K> {
    objs.iter()
        .cloned()
        .map(|mut o| {
            o.meta_mut().labels = None;
            o
        })
        .collect()
}

/// `objs` in a kube reflector store, as the store and its writer.
fn in_kube_store<K>(objs: &[K]) -> Box<dyn std::any::Any>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    for o in objs {
        writer.apply_watcher_event(&watcher::Event::Apply(o.clone()));
    }
    Box::new((store, writer))
}

/// `objs` as records in a record store, as the store and its writer.
fn in_records<R: Record>(objs: &[R::Kind]) -> Box<dyn std::any::Any>
where
    R::Kind: Clone,
{
    let (store, mut writer) = record_store::<R>();
    for o in objs {
        writer.apply(&watcher::Event::Apply(o.clone()));
    }
    Box::new((store, writer))
}
