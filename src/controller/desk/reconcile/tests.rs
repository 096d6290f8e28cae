//! The executor's guarded writes against a client that answers like an apiserver whose
//! state the cache has not caught up with: a refused write is followed by one live read,
//! and the pass plans again on what that read returned.

use serde_json::{Value, json};

use super::*;
use crate::controller::desk::context::DeskSettings;
use crate::controller::test_support::{Asked, Log, World, client, refusal, world};
use crate::model::DeskNamespaces;

const VMS: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines";
const VM: &str = "/apis/kubevirt.io/v1/namespaces/ns/virtualmachines/cyberdesk-alice";
const STATUS: &str = "/apis/cyberdesk.io/v1alpha1/namespaces/ns/cyberdesks/alice/status";
const STARTED: &str = "2026-01-01T10:00:00Z";

fn desk(spec: Value, status: Value) -> Cyberdesk {
    serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": "alice", "namespace": "ns", "uid": "desk-uid", "generation": 1,
                     "finalizers": [names::FINALIZER]},
        "spec": spec, "status": status,
    }))
    .expect("desk")
}

/// The desk's VM as stored, controlled by the desk.
fn vm_json(run_strategy: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "cyberdesk-alice", "namespace": "ns", "uid": "vm-uid",
                     "creationTimestamp": STARTED, "resourceVersion": "7",
                     "labels": {"cyberdesk-instance": "alice"},
                     "ownerReferences": [{"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                                          "name": "alice", "uid": "desk-uid", "controller": true}]},
        "spec": {"runStrategy": run_strategy, "template": {"spec": {}}}
    })
}

fn context(w: &World) -> DeskContext {
    let settings = DeskSettings {
        default_timeout_ms: 3_600_000,
        legacy_status: false,
        desk_namespaces: DeskNamespaces::new(Vec::new()),
    };
    DeskContext::new(w.shared.clone(), settings, None)
}

/// The desk as stored after a status write: the written status on `stored`.
fn status_written(stored: &Cyberdesk, asked: &Asked) -> (u16, Value) {
    let mut desk = serde_json::to_value(stored).expect("desk");
    desk["status"] = asked.body["status"].clone();
    (200, desk)
}

fn count(log: &Log, method: &str, path: &str) -> usize {
    log.to(path)
        .iter()
        .filter(|a| a.method == method && a.path.split('?').next() == Some(path))
        .count()
}

#[tokio::test]
async fn a_create_refused_as_existing_reads_the_vm_live_once_and_creates_nothing_more() {
    // Ten years: the VM's creation time, in the past, is far from its expiry.
    let stored = desk(json!({"timeoutMs": 315_360_000_000_i64}), json!({}));
    let answer_desk = stored.clone();
    let (client, log) = client(
        move |asked| match (asked.method.as_str(), asked.path.as_str()) {
            ("POST", p) if p.starts_with(VMS) => refusal(409, "AlreadyExists"),
            ("GET", p) if p.starts_with(VM) => (200, vm_json("Always")),
            ("PATCH", p) if p.starts_with(STATUS) => status_written(&answer_desk, asked),
            _ => (201, json!({})),
        },
    );
    let w = world(client);
    let ctx = context(&w);
    let (_, outcome) = apply_on(&stored, &ctx, "ns", "cyberdesk-alice".into(), None)
        .await
        .expect("pass");
    assert_eq!(outcome, Outcome::Success);
    assert_eq!(count(&log, "POST", VMS), 1, "one create, never a second");
    assert_eq!(count(&log, "GET", VM), 1, "one live read after the 409");
    let writes = log.to(STATUS);
    assert_eq!(writes.len(), 1, "{writes:?}");
    // Planned again on the VM the live read returned: the status names it.
    assert_eq!(
        writes[0].body["status"]["virtualMachineRef"],
        "cyberdesk-alice"
    );
    assert_eq!(w.metrics.vm_created.get(), 0);
}

#[tokio::test]
async fn a_halt_refused_by_its_test_reads_the_vm_live_and_halts_what_it_read() {
    // Expired long ago; the cache shows the VM running as `Always`, but it is `Manual` now
    // (someone changed it): the guarded halt's `test` fails with 422.
    let stored = desk(
        json!({"timeoutMs": 60_000, "timeoutAction": "Stop"}),
        json!({"startTime": STARTED, "phase": "Running"}),
    );
    let answer_desk = stored.clone();
    let (client, log) = client(
        move |asked| match (asked.method.as_str(), asked.path.as_str()) {
            ("PATCH", p) if p.starts_with(VM) => {
                let tested = asked.body[0]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if tested == "Manual" {
                    (200, vm_json("Halted"))
                } else {
                    refusal(422, "Invalid")
                }
            }
            ("GET", p) if p.starts_with(VM) => (200, vm_json("Manual")),
            ("PATCH", p) if p.starts_with(STATUS) => status_written(&answer_desk, asked),
            _ => (201, json!({})),
        },
    );
    let w = world(client);
    let ctx = context(&w);
    let cached: VirtualMachine = serde_json::from_value(vm_json("Always")).expect("vm");
    let (action, outcome) = apply_on(&stored, &ctx, "ns", "cyberdesk-alice".into(), Some(cached))
        .await
        .expect("pass");
    // Stop: the pass ends after the halt, to write the status when the VM's event comes.
    assert_eq!(action, Action::requeue(plan::HALT_FOLLOW_UP));
    assert_eq!(outcome, Outcome::Success);
    let halts: Vec<Asked> = log
        .to(VM)
        .into_iter()
        .filter(|a| a.method == "PATCH")
        .collect();
    assert_eq!(halts.len(), 2, "{halts:?}");
    assert_eq!(halts[0].body[0]["value"], "Always");
    assert_eq!(halts[1].body[0]["value"], "Manual");
    assert_eq!(count(&log, "GET", VM), 1, "one live read after the 422");
    // Counted once: the refused halt was no timeout.
    assert_eq!(w.metrics.vm_timeout.get(), 1);
}

#[tokio::test]
async fn a_second_refusal_after_the_live_read_fails_the_pass() {
    let stored = desk(
        json!({"timeoutMs": 60_000, "timeoutAction": "Stop"}),
        json!({"startTime": STARTED, "phase": "Running"}),
    );
    let (client, log) = client(
        move |asked| match (asked.method.as_str(), asked.path.as_str()) {
            ("PATCH", p) if p.starts_with(VM) => refusal(409, "Conflict"),
            ("GET", p) if p.starts_with(VM) => (200, vm_json("Always")),
            _ => (201, json!({})),
        },
    );
    let w = world(client);
    let ctx = context(&w);
    let cached: VirtualMachine = serde_json::from_value(vm_json("Always")).expect("vm");
    let error = apply_on(&stored, &ctx, "ns", "cyberdesk-alice".into(), Some(cached))
        .await
        .expect_err("refused twice");
    assert!(matches!(error, Error::Kube(_)), "{error}");
    assert_eq!(count(&log, "GET", VM), 1, "never more than one live read");
    assert_eq!(w.metrics.vm_timeout.get(), 0);
}
