//! One level-triggered reconcile pass for a Cyberdesk: read the world, make it right, write
//! only what changed. Running it twice in a row changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::Instrument;

use crate::catalog::{Catalog, ResolvedTemplate, TemplateRefusal};
use crate::controller::error::Error;
use crate::controller::expiry::{self, Deadline};
use crate::controller::status::{self, Observation, RenderProblem};
use crate::controller::template::{self, EMPTY_CLOUD_CONFIG, Ownership, TemplateVars};
use crate::metrics::Metrics;
use crate::model::conditions::{self, ConditionStatus};
use crate::model::{
    Cyberdesk, CyberdeskPhase, TimeoutAction, VirtualMachine, VirtualMachineInstance, names,
};

/// How often a desk that cannot be built (missing Secret, broken template) is retried, in
/// addition to the retry that a ConfigMap change triggers.
const RENDER_RETRY: Duration = Duration::from_secs(15);
/// How often cleanup re-checks while KubeVirt deletes the VM and VMI (watches usually win).
const CLEANUP_RECHECK: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ControllerConfig {
    pub default_timeout_ms: i64,
}

pub struct Context {
    pub client: kube::Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The template ConfigMaps, kept current by a watch (hot reload).
    pub templates: Catalog,
    pub cfg: ControllerConfig,
    /// Consecutive failures per desk, for exponential backoff.
    pub failures: Mutex<HashMap<ObjectRef<Cyberdesk>, u32>>,
}

fn pp() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

fn plain_pp() -> PatchParams {
    PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

impl Context {
    async fn publish(
        &self,
        cd: &Cyberdesk,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &cd.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not publish event");
        }
    }

    fn time<T>(&self, operation: &str, start: Instant, value: T) -> T {
        self.metrics
            .operation_duration
            .with_label_values(&[operation])
            .observe(start.elapsed().as_secs_f64());
        value
    }
}

/// Is this VM ours to manage: controlled by this very Cyberdesk (same uid)?
fn owned_by(vm: &VirtualMachine, cd: &Cyberdesk) -> bool {
    let uid = cd.metadata.uid.as_deref();
    vm.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid && o.kind == "Cyberdesk")
}

fn timed_out_before(cd: &Cyberdesk) -> bool {
    cd.status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::TIMED_OUT))
        .is_some_and(|c| c.status == ConditionStatus::True)
}

pub async fn reconcile(cd: Arc<Cyberdesk>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let ns = cd.namespace().ok_or(Error::NoNamespace)?;
    let span = tracing::info_span!("reconcile", cyberdesk = %cd.name_any(), namespace = %ns);
    let result = async {
        if cd.metadata.deletion_timestamp.is_some() {
            cleanup(&cd, &ctx, &ns).await
        } else {
            apply(&cd, &ctx, &ns).await
        }
    }
    .instrument(span)
    .await;
    let result = ctx.time("reconcile", start, result);
    if result.is_ok()
        && let Ok(mut failures) = ctx.failures.lock()
    {
        failures.remove(&ObjectRef::from(cd.as_ref()));
    }
    result
}

/// Requeue with exponential backoff (0.5 s doubling to 5 min) per desk.
pub fn error_policy(cd: Arc<Cyberdesk>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .with_label_values(&[error.metric_label()])
        .inc();
    ctx.metrics
        .reconcile_total
        .with_label_values(&["error"])
        .inc();
    let attempts = match ctx.failures.lock() {
        Ok(mut failures) => {
            let n = failures.entry(ObjectRef::from(cd.as_ref())).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay =
        Duration::from_millis(500u64.saturating_mul(1 << attempts.min(10).saturating_sub(1)))
            .min(Duration::from_secs(300));
    tracing::warn!(cyberdesk = %cd.name_any(), namespace = ?cd.namespace(), %error, attempts, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

async fn ensure_finalizer(api: &Api<Cyberdesk>, cd: &Cyberdesk) -> Result<bool, Error> {
    let finalizers = cd.finalizers();
    if finalizers.iter().any(|f| f == names::FINALIZER) {
        return Ok(false);
    }
    let rv = cd.resource_version().unwrap_or_default();
    let ops = if cd.metadata.finalizers.is_none() {
        json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
               {"op": "add", "path": "/metadata/finalizers", "value": [names::FINALIZER]}])
    } else {
        json!([{"op": "test", "path": "/metadata/resourceVersion", "value": rv},
               {"op": "add", "path": "/metadata/finalizers/-", "value": names::FINALIZER}])
    };
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|source| Error::Serialization {
            what: "finalizer patch",
            source,
        })?;
    api.patch(&cd.name_any(), &plain_pp(), &Patch::<()>::Json(patch))
        .await?;
    Ok(true)
}

async fn remove_finalizer(api: &Api<Cyberdesk>, cd: &Cyberdesk) -> Result<(), Error> {
    let remaining: Vec<&String> = cd
        .finalizers()
        .iter()
        .filter(|f| *f != names::FINALIZER)
        .collect();
    let rv = cd.resource_version().unwrap_or_default();
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
    ]))
    .map_err(|source| Error::Serialization {
        what: "finalizer patch",
        source,
    })?;
    match api
        .patch(&cd.name_any(), &plain_pp(), &Patch::<()>::Json(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The template for this desk, parsed; refused like the webhook refuses it, because the
/// webhooks can be switched off.
fn load_template(
    cd: &Cyberdesk,
    ctx: &Context,
    ns: &str,
) -> Result<(ResolvedTemplate, Value), RenderProblem> {
    let resolved = ctx
        .templates
        .resolve(cd.spec.template.as_deref(), ns)
        .map_err(|refusal| match refusal {
            TemplateRefusal::NotAllowed { .. } => {
                RenderProblem::TemplateNotAllowed(refusal.to_string())
            }
            _ => RenderProblem::Template(refusal.to_string()),
        })?;
    let parsed = template::parse(&resolved.text)
        .map_err(|e| RenderProblem::Template(format!("{}: {e}", resolved.describe())))?;
    Ok((resolved, parsed))
}

/// The user data the template asks for: the Secret's name for a `secretRef` (not read: KubeVirt
/// reads it), its value base64 for `${user_data_base64}` (read, which needs the opt-in RBAC).
/// API failures other than not-found/forbidden are errors (retried), not problems.
async fn user_data_vars(
    cd: &Cyberdesk,
    resolved: &ResolvedTemplate,
    ctx: &Context,
    ns: &str,
) -> Result<Result<(String, String), RenderProblem>, Error> {
    let Some(r) = &cd.spec.user_data_secret_ref else {
        return Ok(Ok((B64.encode(EMPTY_CLOUD_CONFIG), String::new())));
    };
    if let Some(problem) = resolved.secret_key_problem(&r.key) {
        return Ok(Err(RenderProblem::UserData(problem)));
    }
    if !resolved.uses(template::USER_DATA_BASE64) {
        return Ok(Ok((String::new(), r.name.clone())));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match secrets.get_opt(&r.name).await {
        Ok(Some(secret)) => match secret.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(bytes) => Ok(Ok((B64.encode(&bytes.0), r.name.clone()))),
            None => Ok(Err(RenderProblem::UserData(format!(
                "Secret {} has no key {}",
                r.name, r.key
            )))),
        },
        Ok(None) => Ok(Err(RenderProblem::UserData(format!(
            "Secret {} not found in namespace {ns}",
            r.name
        )))),
        Err(kube::Error::Api(e)) if e.code == 403 => Ok(Err(RenderProblem::UserData(format!(
            "{} puts the user data inline (${{user_data_base64}}), but the operator may not get Secret {} in namespace {ns}; install the inline-user-data component (manifests/components/inline-user-data) or use a template with ${{user_data_secret_name}}",
            resolved.describe(),
            r.name
        )))),
        Err(e) => Err(e.into()),
    }
}

async fn render_vm(
    cd: &Cyberdesk,
    ctx: &Context,
    ns: &str,
    run_strategy: &'static str,
) -> Result<Result<Value, RenderProblem>, Error> {
    let (resolved, template) = match load_template(cd, ctx, ns) {
        Ok(t) => t,
        Err(problem) => return Ok(Err(problem)),
    };
    let (user_data_base64, user_data_secret_name) =
        match user_data_vars(cd, &resolved, ctx, ns).await? {
            Ok(u) => u,
            Err(problem) => return Ok(Err(problem)),
        };
    let owner = cd.controller_owner_ref(&()).ok_or(Error::NoNamespace)?;
    let owner_reference = serde_json::to_value(owner).map_err(|source| Error::Serialization {
        what: "ownerReference",
        source,
    })?;
    let name = cd.name_any();
    let vars = TemplateVars {
        vm_name: names::vm_name(&name),
        namespace: ns.into(),
        cyberdesk_name: name,
        user_data_base64,
        user_data_secret_name,
    };
    Ok(template::render(
        &template,
        &vars,
        &Ownership {
            owner_reference,
            run_strategy,
        },
    )
    .map_err(|e| RenderProblem::Template(e.to_string())))
}

/// Halts the VM with a guarded JSON patch (the same change `virtctl stop` makes).
async fn halt(vms: &Api<VirtualMachine>, vm: &VirtualMachine) -> Result<VirtualMachine, Error> {
    let name = vm.name_any();
    let ops = match vm.run_strategy() {
        Some(current) => json!([{"op": "test", "path": "/spec/runStrategy", "value": current},
                                {"op": "replace", "path": "/spec/runStrategy", "value": "Halted"}]),
        None => json!([{"op": "add", "path": "/spec/runStrategy", "value": "Halted"}]),
    };
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|source| Error::Serialization {
            what: "halt patch",
            source,
        })?;
    Ok(vms
        .patch(&name, &plain_pp(), &Patch::<()>::Json(patch))
        .await?)
}

async fn write_status(
    api: &Api<Cyberdesk>,
    cd: &Cyberdesk,
    desired: &crate::model::CyberdeskStatus,
) -> Result<(), Error> {
    let body =
        json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "status": desired});
    api.patch_status(&cd.name_any(), &pp(), &Patch::Apply(body))
        .await?;
    Ok(())
}

async fn apply(cd: &Cyberdesk, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let name = cd.name_any();
    let api: Api<Cyberdesk> = Api::namespaced(ctx.client.clone(), ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), ns);
    let vm_name = names::vm_name(&name);

    if ensure_finalizer(&api, cd).await? {
        // The patch bumped the resourceVersion; the watch event brings the next pass.
        ctx.metrics
            .reconcile_total
            .with_label_values(&["success"])
            .inc();
        return Ok(Action::await_change());
    }

    let mut vm = vms.get_opt(&vm_name).await?;
    if let Some(existing) = &vm
        && !owned_by(existing, cd)
    {
        let note = format!(
            "VirtualMachine {vm_name} exists but is not controlled by this Cyberdesk; leaving it alone"
        );
        ctx.publish(
            cd,
            EventType::Warning,
            "VirtualMachineConflict",
            "Create",
            note,
        )
        .await;
        ctx.metrics
            .reconcile_total
            .with_label_values(&["requeue"])
            .inc();
        return Ok(Action::requeue(RENDER_RETRY));
    }
    let vmi = vmis.get_opt(&vm_name).await?;
    let now = Timestamp::now();

    // Timeout: sticky once reached. The halt is the transition that is counted and
    // announced; it is judged on the live VM, so a stale cached Cyberdesk (whose TimedOut
    // condition we wrote a moment ago) can never count one timeout twice.
    let expiry = status::expiry_time(cd, vm.as_ref(), ctx.cfg.default_timeout_ms);
    let expired = match expiry.map(|exp| expiry::deadline(now, exp)) {
        Some(Deadline::Passed(lag)) => Some(lag),
        _ => None,
    };
    let timed_out = timed_out_before(cd) || expired.is_some();
    if timed_out
        && let Some(current) = &vm
        && current.run_strategy() != Some("Halted")
    {
        let lag = expired.unwrap_or_default();
        tracing::info!(vm = %vm_name, lag_ms = lag.as_millis() as u64, "timeout reached; halting the VM");
        let t = Instant::now();
        vm = Some(ctx.time("stop_vm", t, halt(&vms, current).await)?);
        ctx.metrics.vm_timeout.inc();
        ctx.metrics.timeout_lag.observe(lag.as_secs_f64());
        let note = format!(
            "timed out after {} ms; halted VirtualMachine {vm_name}",
            cd.spec.timeout_ms.unwrap_or(ctx.cfg.default_timeout_ms)
        );
        ctx.publish(cd, EventType::Normal, "TimedOut", "Stop", note)
            .await;
    }

    let mut render_error = None;
    if vm.is_none() && !timed_out {
        match render_vm(cd, ctx, ns, "Always").await? {
            Ok(rendered) => {
                let t = Instant::now();
                let created = vms.patch(&vm_name, &pp(), &Patch::Apply(rendered)).await;
                match ctx.time("create_vm", t, created) {
                    Ok(created) => {
                        ctx.metrics.vm_created.inc();
                        tracing::info!(vm = %vm_name, "created VirtualMachine");
                        let note = format!("created VirtualMachine {vm_name}");
                        ctx.publish(
                            cd,
                            EventType::Normal,
                            "VirtualMachineCreated",
                            "Create",
                            note,
                        )
                        .await;
                        vm = Some(created);
                    }
                    // A VM the apiserver refuses (invalid, forbidden) will not pass on
                    // retry either: report it on the desk like any other render problem.
                    Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
                        render_error = Some(RenderProblem::Rejected(format!(
                            "the apiserver rejected VirtualMachine {vm_name}: {}",
                            e.message
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            Err(problem) => render_error = Some(problem),
        }
    }
    if let Some(problem) = &render_error {
        // One Warning per distinct problem, not one per retry.
        let before = cd.status.as_ref().and_then(|s| s.message.as_deref());
        if before != Some(problem.message()) {
            let reason = match problem {
                RenderProblem::Template(_) => "TemplateInvalid",
                RenderProblem::TemplateNotAllowed(_) => "TemplateNotAllowed",
                RenderProblem::UserData(_) => "UserDataUnavailable",
                RenderProblem::Rejected(_) => "CreateRejected",
            };
            ctx.publish(
                cd,
                EventType::Warning,
                reason,
                "Create",
                problem.message().to_string(),
            )
            .await;
        }
    }

    let observation = Observation {
        cyberdesk: cd,
        vm: vm.as_ref(),
        vmi: vmi.as_ref(),
        render_error: render_error.as_ref(),
        timed_out,
        default_timeout_ms: ctx.cfg.default_timeout_ms,
        now,
    };
    let desired = status::desired_status(&observation);
    if cd.status.as_ref() != Some(&desired) {
        let was = cd.status.as_ref().and_then(|s| s.phase);
        let t = Instant::now();
        let written = write_status(&api, cd, &desired).await;
        ctx.time("update_status", t, written)?;
        if desired.phase == Some(CyberdeskPhase::Running) && was != Some(CyberdeskPhase::Running) {
            let ip = desired.ip_address.clone().unwrap_or_default();
            ctx.publish(
                cd,
                EventType::Normal,
                "Ready",
                "Start",
                format!("desktop running at {ip}"),
            )
            .await;
        }
    }

    if timed_out && cd.timeout_action() == TimeoutAction::Delete {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                ctx.publish(
                    cd,
                    EventType::Normal,
                    "Deleting",
                    "Delete",
                    "timeoutAction Delete: deleting the Cyberdesk".into(),
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.metrics
            .reconcile_total
            .with_label_values(&["success"])
            .inc();
        return Ok(Action::await_change());
    }

    let action = match (
        &render_error,
        desired.expiry_time.as_deref().and_then(expiry::parse),
        timed_out,
    ) {
        (Some(_), _, _) => Action::requeue(RENDER_RETRY),
        (None, Some(exp), false) => match expiry::deadline(Timestamp::now(), exp) {
            // Wake up exactly at expiry; no polling in between.
            Deadline::In(wait) => Action::requeue(wait),
            Deadline::Passed(_) => Action::requeue(Duration::ZERO),
        },
        _ => Action::await_change(),
    };
    let result = if render_error.is_some() {
        "requeue"
    } else {
        "success"
    };
    ctx.metrics
        .reconcile_total
        .with_label_values(&[result])
        .inc();
    Ok(action)
}

async fn cleanup(cd: &Cyberdesk, ctx: &Context, ns: &str) -> Result<Action, Error> {
    if !cd.finalizers().iter().any(|f| f == names::FINALIZER) {
        return Ok(Action::await_change());
    }
    let name = cd.name_any();
    let api: Api<Cyberdesk> = Api::namespaced(ctx.client.clone(), ns);
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.client.clone(), ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(ctx.client.clone(), ns);
    let vm_name = names::vm_name(&name);

    let vm = vms.get_opt(&vm_name).await?.filter(|vm| owned_by(vm, cd));
    if let Some(vm) = &vm
        && vm.metadata.deletion_timestamp.is_none()
    {
        let t = Instant::now();
        let deleted = vms.delete(&vm_name, &DeleteParams::default()).await;
        match ctx.time("delete_vm", t, deleted) {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        ctx.metrics.vm_deleted.inc();
        tracing::info!(vm = %vm_name, "deleting VirtualMachine");
        ctx.publish(
            cd,
            EventType::Normal,
            "DeletingVirtualMachine",
            "Delete",
            format!("deleting VirtualMachine {vm_name}"),
        )
        .await;
    }
    // A VMI left by a VM we just deleted belongs to it; KubeVirt removes it before the VM.
    let vmi = if vm.is_some() {
        vmis.get_opt(&vm_name).await?
    } else {
        None
    };

    let observation = Observation {
        cyberdesk: cd,
        vm: vm.as_ref(),
        vmi: vmi.as_ref(),
        render_error: None,
        timed_out: timed_out_before(cd),
        default_timeout_ms: ctx.cfg.default_timeout_ms,
        now: Timestamp::now(),
    };
    let desired = status::desired_status(&observation);
    if vm.is_some() || vmi.is_some() {
        if cd.status.as_ref() != Some(&desired) {
            write_status(&api, cd, &desired).await?;
        }
        ctx.metrics
            .reconcile_total
            .with_label_values(&["requeue"])
            .inc();
        return Ok(Action::requeue(CLEANUP_RECHECK));
    }
    remove_finalizer(&api, cd).await?;
    tracing::info!(vm = %vm_name, "VirtualMachine gone; finalizer released");
    ctx.publish(
        cd,
        EventType::Normal,
        "CleanedUp",
        "Delete",
        format!("VirtualMachine {vm_name} is gone"),
    )
    .await;
    ctx.metrics
        .reconcile_total
        .with_label_values(&["success"])
        .inc();
    Ok(Action::await_change())
}
