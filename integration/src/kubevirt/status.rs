//! Pure rules shared by the simulated controllers: run strategies, VMI phases, condition
//! bookkeeping and the VM status virt-controller would compute. No API calls here.

use kube::api::DynamicObject;
use kube::core::ObjectMeta;
use serde_json::{Map, Value, json};

use super::VM_GENERATION_ANNOTATION;

/// `spec.runStrategy` of a VM, after folding in the deprecated `spec.running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RunStrategy {
    Always,
    Halted,
    Manual,
    RerunOnFailure,
    Once,
    WaitAsReceiver,
}

impl RunStrategy {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::Halted => "Halted",
            RunStrategy::Manual => "Manual",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Once => "Once",
            RunStrategy::WaitAsReceiver => "WaitAsReceiver",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Always" => RunStrategy::Always,
            "Halted" => RunStrategy::Halted,
            "Manual" => RunStrategy::Manual,
            "RerunOnFailure" => RunStrategy::RerunOnFailure,
            "Once" => RunStrategy::Once,
            "WaitAsReceiver" => RunStrategy::WaitAsReceiver,
            _ => return None,
        })
    }

    /// The strategy of a VM spec, or why virt-api's webhook would have rejected the VM.
    pub(super) fn of_spec(spec: &Value) -> Result<Self, String> {
        let running = spec.get("running").and_then(Value::as_bool);
        let strategy = spec.get("runStrategy").and_then(Value::as_str);
        match (running, strategy) {
            (Some(_), Some(_)) => {
                Err("spec.running and spec.runStrategy are mutually exclusive".into())
            }
            (None, None) => Err("RunStrategy must be specified".into()),
            (Some(true), None) => Ok(RunStrategy::Always),
            (Some(false), None) => Ok(RunStrategy::Halted),
            (None, Some(s)) => Self::parse(s).ok_or_else(|| format!("unknown runStrategy {s:?}")),
        }
    }
}

pub(super) const PENDING: &str = "Pending";
pub(super) const SCHEDULING: &str = "Scheduling";
pub(super) const SCHEDULED: &str = "Scheduled";
pub(super) const RUNNING: &str = "Running";
pub(super) const SUCCEEDED: &str = "Succeeded";
pub(super) const FAILED: &str = "Failed";

/// `status.phase` of a VMI, `""` when unset.
pub(super) fn phase(vmi: &DynamicObject) -> &str {
    vmi.data["status"]["phase"].as_str().unwrap_or_default()
}

pub(super) fn is_final(vmi: &DynamicObject) -> bool {
    matches!(phase(vmi), SUCCEEDED | FAILED)
}

pub(super) fn is_deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

pub(super) fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == finalizer)
}

/// The finalizer list without `finalizer`.
pub(super) fn finalizers_without(meta: &ObjectMeta, finalizer: &str) -> Vec<String> {
    meta.finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect()
}

/// Now, as Kubernetes serializes `metav1.Time` (whole seconds, UTC).
pub(super) fn now() -> String {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    serde_json::to_value(Time(k8s_openapi::jiff::Timestamp::now()))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The object's `status` map, created when missing; `None` when the body is not a JSON
/// object (nothing sane to write then).
pub(super) fn status_mut(obj: &mut DynamicObject) -> Option<&mut Map<String, Value>> {
    let status = obj
        .data
        .as_object_mut()?
        .entry("status")
        .or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    status.as_object_mut()
}

/// `status.conditions` of an object, empty when absent or malformed.
pub(super) fn conditions(obj: &DynamicObject) -> Vec<Value> {
    obj.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn find<'a>(conds: &'a [Value], kind: &str) -> Option<&'a Value> {
    conds.iter().find(|c| c["type"].as_str() == Some(kind))
}

/// Whether condition `kind` exists with `status` (and `reason`, when given).
pub(super) fn has_condition(
    conds: &[Value],
    kind: &str,
    status: &str,
    reason: Option<&str>,
) -> bool {
    find(conds, kind).is_some_and(|c| {
        c["status"].as_str() == Some(status)
            && reason.is_none_or(|r| c["reason"].as_str() == Some(r))
    })
}

/// A condition as KubeVirt writes it; `reason`/`message` are left out when empty and
/// `None` times are written as `null`, like Go's nullable `metav1.Time`.
pub(super) fn condition(
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    probe: Option<&str>,
    transition: Option<&str>,
) -> Value {
    let mut c = Map::new();
    c.insert("type".into(), json!(kind));
    c.insert("status".into(), json!(status));
    if !reason.is_empty() {
        c.insert("reason".into(), json!(reason));
    }
    if !message.is_empty() {
        c.insert("message".into(), json!(message));
    }
    c.insert("lastProbeTime".into(), json!(probe));
    c.insert("lastTransitionTime".into(), json!(transition));
    Value::Object(c)
}

/// Same condition apart from its timestamps.
fn same_condition(a: &Value, b: &Value) -> bool {
    ["type", "status", "reason", "message"]
        .iter()
        .all(|k| a[*k].as_str().unwrap_or_default() == b[*k].as_str().unwrap_or_default())
}

/// Puts `cond` in place of the condition of its type, keeping the old one (and so its
/// timestamps) when nothing but times would change. Appends when the type is new.
pub(super) fn upsert_condition(conds: &mut Vec<Value>, cond: Value) {
    match conds.iter_mut().find(|c| c["type"] == cond["type"]) {
        Some(old) if same_condition(old, &cond) => {}
        Some(old) => *old = cond,
        None => conds.push(cond),
    }
}

pub(super) fn remove_condition(conds: &mut Vec<Value>, kind: &str) {
    conds.retain(|c| c["type"].as_str() != Some(kind));
}

/// VM conditions that are never copied from (or pruned against) the VMI.
const VM_ONLY_CONDITIONS: [&str; 3] = ["Ready", "Failure", "RestartRequired"];

/// A failed API call of a sync pass, reported in the VM's `Failure` condition.
#[derive(Clone, Debug)]
pub(super) struct SyncError {
    pub reason: &'static str,
    pub message: String,
}

/// Everything the VM status is derived from, after the pass's actions.
pub(super) struct StatusInput<'a> {
    pub vm: &'a DynamicObject,
    pub vmi: Option<&'a DynamicObject>,
    pub strategy: RunStrategy,
    pub sync_error: Option<&'a SyncError>,
    /// The pass deleted a failed VMI that RerunOnFailure must restart.
    pub add_start_request: bool,
    /// A failed VMI waits out the restart backoff.
    pub crash_loop: bool,
    pub now: &'a str,
}

/// The VM `status` virt-controller would write: other fields are kept as they are.
pub(super) fn desired_vm_status(input: &StatusInput<'_>) -> Value {
    let mut status = input.vm.data["status"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let vmi = input.vmi;
    // Go's `bool` with `omitempty`: false is absent, not false.
    set_flag(&mut status, "created", vmi.is_some());
    set_flag(
        &mut status,
        "ready",
        vmi.is_some_and(|v| has_condition(&conditions(v), "Ready", "True", None)),
    );
    if let Some(vmi) = vmi {
        sync_generations(&mut status, input.vm, vmi);
    }
    // Recorded from the first time a VMI exists, so one can tell the VM ever started.
    let recorded = status
        .get("runStrategy")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if recorded || vmi.is_some() {
        status.insert("runStrategy".into(), json!(input.strategy.as_str()));
    }
    sync_change_requests(&mut status, vmi, input.add_start_request);
    let old = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let conds = vm_conditions(old, vmi, input.sync_error, input.now);
    status.insert("conditions".into(), Value::Array(conds));
    let printable = if input.crash_loop {
        "CrashLoopBackOff"
    } else {
        printable_status(input.vm, vmi)
    };
    status.insert("printableStatus".into(), json!(printable));
    Value::Object(status)
}

fn set_flag(status: &mut Map<String, Value>, key: &str, on: bool) {
    if on {
        status.insert(key.into(), json!(true));
    } else {
        status.remove(key);
    }
}

fn sync_generations(status: &mut Map<String, Value>, vm: &DynamicObject, vmi: &DynamicObject) {
    let observed = vmi
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VM_GENERATION_ANNOTATION))
        .and_then(|g| g.parse::<i64>().ok());
    if let Some(observed) = observed {
        status.insert("observedGeneration".into(), json!(observed));
        status.insert(
            "desiredGeneration".into(),
            json!(vm.metadata.generation.unwrap_or_default()),
        );
    }
}

/// Adds a pending start request and drops the first request once it has been acted upon.
fn sync_change_requests(
    status: &mut Map<String, Value>,
    vmi: Option<&DynamicObject>,
    add_start: bool,
) {
    let mut requests = status
        .get("stateChangeRequests")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if add_start {
        requests.push(json!({"action": "Start"}));
    }
    let first_done = requests
        .first()
        .is_some_and(|r| match r["action"].as_str() {
            Some("Stop") => vmi.is_none_or(|v| r["uid"].as_str() != v.metadata.uid.as_deref()),
            Some("Start") => vmi.is_some_and(|v| !is_deleting(&v.metadata) && !is_final(v)),
            _ => false,
        });
    if first_done {
        requests.remove(0);
    }
    if requests.is_empty() {
        status.remove("stateChangeRequests");
    } else {
        status.insert("stateChangeRequests".into(), Value::Array(requests));
    }
}

/// Whether the VM status asks for a start (a RerunOnFailure restart, or virtctl start).
pub(super) fn has_start_request(vm: &DynamicObject) -> bool {
    vm.data["status"]["stateChangeRequests"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| r["action"].as_str() == Some("Start"))
}

/// Whether the VM status asks to stop `vmi` (virtctl stop names the VMI by uid).
pub(super) fn has_stop_request(vm: &DynamicObject, vmi: &DynamicObject) -> bool {
    vm.data["status"]["stateChangeRequests"]
        .as_array()
        .and_then(|r| r.first())
        .is_some_and(|r| {
            r["action"].as_str() == Some("Stop")
                && r["uid"]
                    .as_str()
                    .is_none_or(|uid| Some(uid) == vmi.metadata.uid.as_deref())
        })
}

/// The run strategy recorded in the VM status by an earlier pass.
pub(super) fn recorded_strategy(vm: &DynamicObject) -> &str {
    vm.data["status"]["runStrategy"]
        .as_str()
        .unwrap_or_default()
}

/// Ready mirrors the VMI; the other VMI conditions are copied; copied conditions the VMI
/// no longer has are dropped (but kept when there is no VMI at all, as KubeVirt does).
fn vm_conditions(
    mut conds: Vec<Value>,
    vmi: Option<&DynamicObject>,
    err: Option<&SyncError>,
    now: &str,
) -> Vec<Value> {
    upsert_condition(&mut conds, vm_ready_condition(vmi, now));
    match err {
        None => remove_condition(&mut conds, "Failure"),
        Some(e) => upsert_condition(
            &mut conds,
            condition("Failure", "True", e.reason, &e.message, None, Some(now)),
        ),
    }
    let Some(vmi) = vmi else { return conds };
    let vmi_conds = conditions(vmi);
    let copied: Vec<&Value> = vmi_conds
        .iter()
        .filter(|c| !VM_ONLY_CONDITIONS.contains(&c["type"].as_str().unwrap_or_default()))
        .collect();
    for c in &copied {
        upsert_condition(&mut conds, (*c).clone());
    }
    conds.retain(|c| {
        let kind = c["type"].as_str().unwrap_or_default();
        VM_ONLY_CONDITIONS.contains(&kind)
            || copied.iter().any(|v| v["type"].as_str() == Some(kind))
    });
    conds
}

fn vm_ready_condition(vmi: Option<&DynamicObject>, now: &str) -> Value {
    let Some(vmi) = vmi else {
        return condition(
            "Ready",
            "False",
            "VMINotExists",
            "VMI does not exist",
            Some(now),
            Some(now),
        );
    };
    match find(&conditions(vmi), "Ready") {
        Some(ready) => ready.clone(),
        None => condition(
            "Ready",
            "False",
            "VMIConditionMissing",
            "VMI is missing the Ready condition",
            Some(now),
            Some(now),
        ),
    }
}

/// `status.printableStatus`: the first rule that matches, in KubeVirt's order (the rules
/// about volumes, migrations and crash loops cannot happen here).
pub(super) fn printable_status(vm: &DynamicObject, vmi: Option<&DynamicObject>) -> &'static str {
    if is_deleting(&vm.metadata) {
        return "Terminating";
    }
    // No VMI: a start in this pass would have produced one, so none is expected.
    let Some(vmi) = vmi else { return "Stopped" };
    let conds = conditions(vmi);
    let paused = has_condition(&conds, "Paused", "True", None);
    match phase(vmi) {
        _ if !is_final(vmi) && is_deleting(&vmi.metadata) => "Stopping",
        RUNNING if paused => "Paused",
        RUNNING => "Running",
        _ if has_condition(&conds, "PodScheduled", "False", Some("Unschedulable")) => {
            "ErrorUnschedulable"
        }
        _ if has_condition(&conds, "Synchronized", "False", Some("ErrImagePull")) => "ErrImagePull",
        _ if has_condition(&conds, "Synchronized", "False", Some("ImagePullBackOff")) => {
            "ImagePullBackOff"
        }
        "" | PENDING | SCHEDULING | SCHEDULED => "Starting",
        SUCCEEDED | FAILED => "Stopped",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("object literal")
    }

    fn vmi(phase: &str, conds: Value) -> DynamicObject {
        object(
            json!({"metadata": {"name": "x", "uid": "u1"}, "status": {"phase": phase, "conditions": conds}}),
        )
    }

    #[test]
    fn run_strategy_follows_the_webhook_rules() {
        assert_eq!(
            RunStrategy::of_spec(&json!({"runStrategy": "Once"})),
            Ok(RunStrategy::Once)
        );
        assert_eq!(
            RunStrategy::of_spec(&json!({"running": true})),
            Ok(RunStrategy::Always)
        );
        assert_eq!(
            RunStrategy::of_spec(&json!({"running": false})),
            Ok(RunStrategy::Halted)
        );
        assert!(RunStrategy::of_spec(&json!({"running": true, "runStrategy": "Always"})).is_err());
        assert!(RunStrategy::of_spec(&json!({})).is_err());
        assert!(RunStrategy::of_spec(&json!({"runStrategy": "Sometimes"})).is_err());
    }

    #[test]
    fn printable_status_precedence() {
        let vm = object(json!({"metadata": {"name": "x"}}));
        let deleting_vm =
            object(json!({"metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"}}));
        let running = vmi("Running", json!([]));
        let stopping = object(
            json!({"metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"},
                                     "status": {"phase": "Running"}}),
        );
        assert_eq!(
            printable_status(&deleting_vm, Some(&running)),
            "Terminating"
        );
        assert_eq!(printable_status(&vm, Some(&stopping)), "Stopping");
        assert_eq!(printable_status(&vm, Some(&running)), "Running");
        let paused = vmi("Running", json!([{"type": "Paused", "status": "True"}]));
        assert_eq!(printable_status(&vm, Some(&paused)), "Paused");
        assert_eq!(
            printable_status(&vm, Some(&vmi("Scheduling", json!([])))),
            "Starting"
        );
        assert_eq!(
            printable_status(&vm, Some(&vmi("Failed", json!([])))),
            "Stopped"
        );
        assert_eq!(printable_status(&vm, None), "Stopped");
        assert_eq!(
            printable_status(&vm, Some(&vmi("Unknown", json!([])))),
            "Unknown"
        );
    }

    #[test]
    fn ready_condition_keeps_its_time_until_it_changes() {
        let mut conds = vec![condition(
            "Ready",
            "False",
            "VMINotExists",
            "VMI does not exist",
            Some("t1"),
            Some("t1"),
        )];
        upsert_condition(
            &mut conds,
            condition(
                "Ready",
                "False",
                "VMINotExists",
                "VMI does not exist",
                Some("t2"),
                Some("t2"),
            ),
        );
        assert_eq!(conds[0]["lastTransitionTime"], "t1");
        upsert_condition(
            &mut conds,
            condition("Ready", "True", "", "", None, Some("t3")),
        );
        assert_eq!(conds[0]["lastTransitionTime"], "t3");
        assert_eq!(conds[0]["lastProbeTime"], Value::Null);
        assert!(conds[0].get("reason").is_none());
    }

    #[test]
    fn vm_status_mirrors_a_running_vmi() {
        let vm = object(
            json!({"metadata": {"name": "x", "generation": 2}, "spec": {"runStrategy": "Always"}}),
        );
        let mut running = vmi(
            "Running",
            json!([{"type": "Ready", "status": "True", "lastProbeTime": null, "lastTransitionTime": "t"},
                   {"type": "LiveMigratable", "status": "True", "lastProbeTime": null, "lastTransitionTime": null}]),
        );
        running.metadata.annotations =
            Some([(VM_GENERATION_ANNOTATION.to_owned(), "2".to_owned())].into());
        let input = StatusInput {
            vm: &vm,
            vmi: Some(&running),
            strategy: RunStrategy::Always,
            sync_error: None,
            add_start_request: false,
            crash_loop: false,
            now: "now",
        };
        let status = desired_vm_status(&input);
        assert_eq!(status["printableStatus"], "Running");
        assert_eq!(status["ready"], true);
        assert_eq!(status["created"], true);
        assert_eq!(status["runStrategy"], "Always");
        assert_eq!(status["observedGeneration"], 2);
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["type"].as_str())
            .collect();
        assert_eq!(types, ["Ready", "LiveMigratable"]);

        let stopped = desired_vm_status(&StatusInput { vmi: None, ..input });
        assert!(stopped.get("ready").is_none() && stopped.get("created").is_none());
        assert_eq!(stopped["conditions"][0]["reason"], "VMINotExists");
    }
}
