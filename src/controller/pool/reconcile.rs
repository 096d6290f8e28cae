//! The warm-pool controller (leader only, beside the desk controller): keeps every
//! CyberdeskPool at its size, with the decisions of `plan.rs`. Pool VMs are rendered
//! from the pool's template like a desk's, owned by the pool and labelled as its members;
//! a desk's claim (`claim.rs`) moves one to the desk.
//!
//! Deleting a pool deletes its unclaimed VMs (its finalizer holds it until they are
//! going); claimed VMs stay with their desks.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::backoff::Failures;
use crate::controller::context::Shared;
use crate::controller::error::Error;
use crate::controller::finalizers;
use crate::controller::pass::{Outcome, Reconciler};
use crate::controller::patch::{self, apply_params, create_params};
use crate::controller::pool::context::PoolContext;
use crate::controller::pool::plan::{Member, MemberState, member_state, plan_pool};
use crate::controller::render::{RENDER_RETRY, Recipe, RenderProblem, load_template, render_from};
use crate::metrics::POOL_STATES;
use crate::model::{CyberdeskPool, VirtualMachine, names};
use crate::template::Ownership;

/// While VMs boot, a pool is looked at again this often even without a watch event.
const BOOTING_RECHECK: Duration = Duration::from_secs(30);
/// While a pool drains, it is looked at again this often (to see its VMs gone).
const DRAIN_RECHECK: Duration = Duration::from_secs(2);

impl Reconciler for PoolContext {
    type Object = CyberdeskPool;
    const OPERATION: &'static str = "reconcile_pool";
    /// A failed pool pass is retried after 1 s, doubling up to 5 min.
    const RETRY_MIN: Duration = Duration::from_secs(1);
    const RETRY_MAX: Duration = Duration::from_secs(300);

    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn failures(&self) -> &Failures<ObjectRef<CyberdeskPool>> {
        &self.failures
    }

    fn span(pool: &CyberdeskPool, ns: &str) -> tracing::Span {
        tracing::info_span!("reconcile_pool", pool = %pool.name_any(), namespace = %ns)
    }

    fn retrying(pool: &CyberdeskPool, error: &Error, attempts: u32, delay: Duration) {
        tracing::warn!(pool = %pool.name_any(), namespace = ?pool.namespace(), %error, attempts, ?delay, "pool reconcile failed; retrying");
    }

    async fn pass(&self, pool: &CyberdeskPool, ns: &str) -> Result<(Action, Outcome), Error> {
        if pool.metadata.deletion_timestamp.is_some() {
            drain(pool, self, ns).await
        } else {
            keep(pool, self, ns).await
        }
    }
}

fn has_finalizer(pool: &CyberdeskPool) -> bool {
    pool.finalizers().iter().any(|f| f == names::POOL_FINALIZER)
}

/// The pool's members as the cache shows them, corrected by this process's own writes.
fn members(pool: &CyberdeskPool, ctx: &PoolContext, ns: &str) -> Vec<Member> {
    let uid = pool.uid().unwrap_or_default();
    let mut members: Vec<Member> = ctx
        .shared
        .caches
        .pool_vms(ns, &pool.name_any())
        .iter()
        .filter_map(|vm| {
            Some(Member {
                name: vm.metadata.name.clone()?,
                state: member_state(vm, &uid)?,
                created: vm.metadata.creation_timestamp.as_ref().map(|t| t.0),
            })
        })
        .collect();
    ctx.writes.correct(&uid, &mut members);
    members
}

/// Why the pool's VMs cannot be rendered, if they cannot (checked without rendering).
fn template_problem(pool: &CyberdeskPool, ctx: &PoolContext, ns: &str) -> Option<String> {
    let (resolved, _) = match load_template(pool.spec.template.as_deref(), &ctx.shared, ns) {
        Ok(loaded) => loaded,
        Err(problem) => return Some(problem.message().to_string()),
    };
    let key = &pool.spec.user_data_secret_ref.as_ref()?.key;
    resolved.secret_key_problem(key)
}

async fn keep(
    pool: &CyberdeskPool,
    ctx: &PoolContext,
    ns: &str,
) -> Result<(Action, Outcome), Error> {
    let api: Api<CyberdeskPool> = Api::namespaced(ctx.shared.client.clone(), ns);
    let stored;
    let pool = if has_finalizer(pool) {
        pool
    } else {
        stored = finalizers::add(&api, pool, names::POOL_FINALIZER).await?;
        &stored
    };
    let uid = pool.uid().ok_or(Error::NoUid)?;
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.shared.client.clone(), ns);
    let members = members(pool, ctx, ns);
    let mut problem = template_problem(pool, ctx, ns);
    let mut plan = plan_pool(pool, &members, problem.as_deref(), Timestamp::now());

    for name in &plan.retire {
        if retire(&vms, name).await? {
            ctx.writes.deleted(&uid, name);
            if let Some((_, reason)) = plan.replaced.iter().find(|(n, _)| n == name) {
                replaced(pool, ctx, name, reason);
            }
        }
    }
    for name in &plan.delete {
        if delete(&vms, name).await? {
            ctx.writes.deleted(&uid, name);
        }
    }
    for _ in 0..plan.create {
        match create_member(pool, ctx, ns, &vms).await? {
            Ok(Some(name)) => ctx.writes.created(&uid, &name),
            // A name taken already: the next pass boots this one under another.
            Ok(None) => {}
            Err(refused) => {
                problem = Some(refused.message().to_string());
                plan = plan_pool(pool, &members, problem.as_deref(), Timestamp::now());
                break;
            }
        }
    }
    if plan.create > 0 {
        tracing::info!(created = plan.create, "booting VMs for the pool");
    }
    if let Some(status) = &plan.status {
        let body = json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "CyberdeskPool", "status": status});
        api.patch_status(&pool.name_any(), &apply_params(), &Patch::Apply(body))
            .await?;
    }
    let status = plan.status.clone().or_else(|| pool.status.clone());
    if let Some(status) = status {
        let name = pool.name_any();
        // In the order of `POOL_STATES`: ready, booting, claimed, desired.
        let counts = [status.ready, status.booting, status.claimed, pool.spec.size];
        for (state, n) in POOL_STATES.iter().zip(counts) {
            ctx.shared
                .metrics
                .pool_vms
                .with_label_values(&[ns, &name, state])
                .set(i64::from(n));
        }
    }
    let booting = members.iter().any(|m| m.state == MemberState::Booting) || plan.create > 0;
    let action = if problem.is_some() {
        Some(RENDER_RETRY)
    } else if booting {
        Some(BOOTING_RECHECK)
    } else {
        None
    };
    // Back exactly when the next unclaimed VM reaches its maximum age (no polling timer).
    let expiry = plan.next_expiry.map(|at| {
        let left = at
            .duration_since(Timestamp::now())
            .max(jiff::SignedDuration::ZERO);
        Duration::try_from(left).unwrap_or(Duration::ZERO) + EXPIRY_SLACK
    });
    let action = match (action, expiry) {
        (Some(a), Some(e)) => Action::requeue(a.min(e)),
        (Some(d), None) | (None, Some(d)) => Action::requeue(d),
        (None, None) => Action::await_change(),
    };
    // Like a desk's: a pool whose VMs cannot be rendered waits on a template fix.
    let outcome = if problem.is_some() {
        Outcome::Requeue
    } else {
        Outcome::Success
    };
    Ok((action, outcome))
}

/// A pass for an expiry comes this much after it, so the VM is past its age, not at it.
const EXPIRY_SLACK: Duration = Duration::from_millis(100);

/// Counts and announces an unclaimed VM taken back to be booted afresh.
fn replaced(pool: &CyberdeskPool, ctx: &PoolContext, vm: &str, reason: &str) {
    ctx.shared
        .metrics
        .pool_replaced
        .with_label_values(&[reason])
        .inc();
    let (type_, event_reason, note) = if reason == "expired" {
        let idle = pool.max_idle().as_millis();
        (
            EventType::Normal,
            "VirtualMachineExpired",
            format!(
                "replacing unclaimed VirtualMachine {vm}: no desk claimed it within maxIdleMs ({idle} ms)"
            ),
        )
    } else {
        (
            EventType::Warning,
            "VirtualMachineFailed",
            format!("replacing unclaimed VirtualMachine {vm}: it is in an error state"),
        )
    };
    tracing::info!(vm = %vm, reason, "replacing an unclaimed pool VM");
    ctx.shared.announcer.announce(
        pool.object_ref(&()),
        Event {
            type_,
            reason: event_reason.into(),
            note: Some(note),
            action: "Replace".into(),
            secondary: None,
        },
    );
}

/// Takes the unclaimed pool VM `name` back and deletes it: first a patch that tests it is
/// still `available` and marks it `retiring`, so that a desk's claim, which tests the same
/// label, and the retirement never both succeed; then the delete. `false` when a desk was
/// faster or the VM is gone.
async fn retire(vms: &Api<VirtualMachine>, name: &str) -> Result<bool, Error> {
    let state = format!(
        "/metadata/labels/{}",
        names::LABEL_POOL_STATE.replace('/', "~1")
    );
    let ops = json!([
        {"op": "test", "path": state, "value": names::POOL_STATE_AVAILABLE},
        {"op": "replace", "path": state, "value": names::POOL_STATE_RETIRING},
    ]);
    match patch::json(vms, name, ops, "retire patch").await {
        Ok(_) => delete(vms, name).await,
        Err(Error::Kube(kube::Error::Api(e))) if matches!(e.code, 404 | 409 | 422) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes a retired pool VM; `false` when it was gone already.
async fn delete(vms: &Api<VirtualMachine>, name: &str) -> Result<bool, Error> {
    match vms.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            tracing::info!(vm = %name, "deleted an unclaimed pool VM");
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Five random characters from [a-z0-9], for a pool VM's name.
fn suffix() -> String {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = [0u8; 5];
    // On the off chance the system RNG fails, a name from the clock still differs.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        let nanos = Timestamp::now().as_nanosecond().unsigned_abs();
        bytes = (nanos as u64).to_le_bytes()[..5]
            .try_into()
            .unwrap_or([0; 5]);
    }
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// The labels of a pool VM and its template: the operator's, and pool membership.
fn member_labels(pool: &str) -> std::collections::BTreeMap<String, String> {
    [
        (names::LABEL_APP, names::LABEL_APP_VALUE),
        (names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
        (names::LABEL_K8S_MANAGED_BY, names::MANAGED_BY_VALUE),
        (names::LABEL_POOL, pool),
        (names::LABEL_POOL_STATE, names::POOL_STATE_AVAILABLE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A rendered VM made a pool member: no desk labels (a template may set them; the claim
/// adds the desk's), and an annotation map the claim can add its time to.
pub fn as_pool_member(vm: &mut Value, pool: &str) {
    const DESK_LABELS: [&str; 3] = [
        names::LABEL_INSTANCE,
        names::LABEL_DESK_NAMESPACE,
        names::LABEL_DESK_UID,
    ];
    for at in ["/metadata/labels", "/spec/template/metadata/labels"] {
        if let Some(Value::Object(labels)) = vm.pointer_mut(at) {
            for key in DESK_LABELS {
                labels.remove(key);
            }
        }
    }
    if let Some(Value::Object(meta)) = vm.pointer_mut("/metadata") {
        let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Value::Object(annotations) = annotations {
            annotations.insert(names::LABEL_POOL.into(), json!(pool));
        }
    }
}

/// Renders and creates one VM for the pool: its name (`None`: the name was taken), or why
/// it cannot be made.
async fn create_member(
    pool: &CyberdeskPool,
    ctx: &PoolContext,
    ns: &str,
    vms: &Api<VirtualMachine>,
) -> Result<Result<Option<String>, RenderProblem>, Error> {
    let pool_name = pool.name_any();
    let vm_name = format!("{}{pool_name}-{}", names::POOL_VM_PREFIX, suffix());
    let owner = pool.controller_owner_ref(&()).ok_or(Error::NoUid)?;
    let ownership = Ownership {
        owner_reference: Some(serde_json::to_value(owner).map_err(|source| {
            Error::Serialization {
                what: "ownerReference",
                source,
            }
        })?),
        labels: member_labels(&pool_name),
    };
    let recipe = Recipe {
        template: pool.spec.template.as_deref(),
        user_data: pool.spec.user_data_secret_ref.as_ref(),
    };
    let mut rendered = match render_from(
        recipe,
        vm_name.clone(),
        vm_name.clone(),
        &ownership,
        &ctx.shared,
        ns,
    )
    .await?
    {
        Ok(vm) => vm,
        Err(problem) => return Ok(Err(problem)),
    };
    as_pool_member(&mut rendered, &pool_name);
    let vm: VirtualMachine =
        serde_json::from_value(rendered).map_err(|source| Error::Serialization {
            what: "rendered VirtualMachine",
            source,
        })?;
    let t = Instant::now();
    let created = vms.create(&create_params(), &vm).await;
    match ctx.shared.time("create_vm", t, created) {
        Ok(_) => {
            ctx.shared.metrics.vm_created.inc();
            Ok(Ok(Some(vm_name)))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(Ok(None)),
        Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => {
            Ok(Err(RenderProblem::Rejected(format!(
                "the apiserver rejected pool VirtualMachine {vm_name}: {}",
                e.message
            ))))
        }
        Err(e) => Err(e.into()),
    }
}

/// A pool being deleted: delete its unclaimed VMs, then let it go. Read live: a stale
/// "none left" would release the pool while VMs it owns still boot.
async fn drain(
    pool: &CyberdeskPool,
    ctx: &PoolContext,
    ns: &str,
) -> Result<(Action, Outcome), Error> {
    if !has_finalizer(pool) {
        return Ok((Action::await_change(), Outcome::Success));
    }
    let name = pool.name_any();
    let uid = pool.uid().unwrap_or_default();
    let vms: Api<VirtualMachine> = Api::namespaced(ctx.shared.client.clone(), ns);
    let selector = format!("{}={name}", names::LABEL_POOL);
    let listed = vms.list(&ListParams::default().labels(&selector)).await?;
    let mut left = 0;
    for vm in &listed.items {
        let name = vm.name_any();
        match member_state(vm, &uid) {
            Some(MemberState::Claimed | MemberState::Deleting) | None => {}
            Some(MemberState::Retiring) => {
                left += 1;
                delete(&vms, &name).await?;
            }
            Some(MemberState::Ready | MemberState::Booting | MemberState::Failed) => {
                left += 1;
                retire(&vms, &name).await?;
            }
        }
    }
    if left > 0 {
        // Waiting on the deletions, like a desk's cleanup waiting on its VM.
        return Ok((Action::requeue(DRAIN_RECHECK), Outcome::Requeue));
    }
    let api: Api<CyberdeskPool> = Api::namespaced(ctx.shared.client.clone(), ns);
    finalizers::release(&api, pool, names::POOL_FINALIZER).await?;
    ctx.writes.forget(&uid);
    for state in POOL_STATES {
        let _ = ctx
            .shared
            .metrics
            .pool_vms
            .remove_label_values(&[ns, &name, state]);
    }
    tracing::info!("pool drained; finalizer released");
    Ok((Action::await_change(), Outcome::Success))
}

#[cfg(test)]
mod tests;
