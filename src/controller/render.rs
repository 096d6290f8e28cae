//! Rendering a VM from a template: for a desk from its own spec or its pool's, and for a
//! pool VM. Template and user-data problems come back as [`RenderProblem`]s to report on
//! the desk or pool; only API failures are errors.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::Value;

use crate::catalog::{ResolvedTemplate, TemplateRefusal};
use crate::controller::announcement::Reason;
use crate::controller::context::Shared;
use crate::controller::error::Error;
use crate::controller::ownership::owner_reference;
use crate::model::placement::vm_labels;
use crate::model::{Cyberdesk, CyberdeskPool, SecretKeyRef};
use crate::template::{self, EMPTY_CLOUD_CONFIG, Ownership, TemplateVars};

/// How often a desk that cannot be built (missing Secret, broken template, refused VM, a
/// name taken by another VM) is looked at again, besides the retry a template change brings.
pub const RENDER_RETRY: Duration = Duration::from_secs(15);

/// A reason the VM cannot be built, reported as a condition rather than retried blindly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RenderProblem {
    Template(String),
    /// The template exists but is not allowed in the desk's namespace.
    TemplateNotAllowed(String),
    UserData(String),
    /// The apiserver (or KubeVirt's admission) refused the rendered VM.
    Rejected(String),
    /// The desk's namespace is not one the operator serves (`--desk-namespaces`).
    NotServed(String),
}

impl RenderProblem {
    pub fn message(&self) -> &str {
        match self {
            RenderProblem::Template(m)
            | RenderProblem::TemplateNotAllowed(m)
            | RenderProblem::UserData(m)
            | RenderProblem::Rejected(m)
            | RenderProblem::NotServed(m) => m,
        }
    }

    /// The event reason that reports this problem on the desk.
    pub fn reason(&self) -> Reason {
        match self {
            RenderProblem::Template(_) => Reason::TemplateInvalid,
            RenderProblem::TemplateNotAllowed(_) => Reason::TemplateNotAllowed,
            RenderProblem::UserData(_) => Reason::UserDataUnavailable,
            RenderProblem::Rejected(_) => Reason::CreateRejected,
            RenderProblem::NotServed(_) => Reason::NamespaceNotServed,
        }
    }
}

/// Where a VM's template and user data come from: the desk's spec, or its pool's.
#[derive(Clone, Copy, Debug)]
pub struct Recipe<'a> {
    pub template: Option<&'a str>,
    pub user_data: Option<&'a SecretKeyRef>,
}

/// The template, parsed; refused like the webhook refuses it, because the webhooks can be
/// switched off.
pub fn load_template(
    template: Option<&str>,
    ctx: &Shared,
    ns: &str,
) -> Result<(ResolvedTemplate, Value), RenderProblem> {
    let resolved = ctx
        .templates
        .resolve(template, ns)
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
    user_data: Option<&SecretKeyRef>,
    resolved: &ResolvedTemplate,
    ctx: &Shared,
    ns: &str,
) -> Result<Result<(String, String), RenderProblem>, Error> {
    let Some(r) = user_data else {
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

/// The desk's VM source: its own spec, or, for a desk from a pool, the pool's (read from
/// the cache; a missing pool is a problem reported on the desk and retried).
fn desk_source<'a>(
    cd: &'a Cyberdesk,
    pool: Option<&'a CyberdeskPool>,
) -> Result<Recipe<'a>, RenderProblem> {
    match (&cd.spec.pool, pool) {
        (None, _) => Ok(Recipe {
            template: cd.spec.template.as_deref(),
            user_data: cd.spec.user_data_secret_ref.as_ref(),
        }),
        (Some(_), Some(pool)) => Ok(Recipe {
            template: pool.spec.template.as_deref(),
            user_data: pool.spec.user_data_secret_ref.as_ref(),
        }),
        (Some(name), None) => Err(RenderProblem::Template(format!(
            "CyberdeskPool {name} not found in namespace {}",
            cd.namespace().unwrap_or_default()
        ))),
    }
}

pub async fn render_vm(
    cd: &Cyberdesk,
    ctx: &Shared,
    ns: &str,
) -> Result<Result<Value, RenderProblem>, Error> {
    let pool = cd.spec.pool.as_deref().and_then(|p| ctx.caches.pool(ns, p));
    let source = match desk_source(cd, pool.as_deref()) {
        Ok(source) => source,
        Err(problem) => return Ok(Err(problem)),
    };
    let uid = cd.uid().ok_or(Error::NoUid)?;
    let name = cd.name_any();
    let ownership = Ownership {
        owner_reference: owner_reference(cd, &ctx.placement, ns)?,
        labels: vm_labels(ns, &name, &uid),
    };
    let vm_name = ctx.placement.vm_name(&name);
    render_from(source, vm_name, name, &ownership, ctx, ns).await
}

/// Renders a VM named `vm_name` from `source` for `cyberdesk_name` (a desk, or the VM
/// itself for a pool VM, whose desk is not known at boot).
pub async fn render_from(
    source: Recipe<'_>,
    vm_name: String,
    cyberdesk_name: String,
    ownership: &Ownership,
    ctx: &Shared,
    ns: &str,
) -> Result<Result<Value, RenderProblem>, Error> {
    let (resolved, template) = match load_template(source.template, ctx, ns) {
        Ok(t) => t,
        Err(problem) => return Ok(Err(problem)),
    };
    let placement = &ctx.placement;
    let vm_ns = placement.vm_namespace(ns);
    let (user_data_base64, user_data_secret_name) =
        match user_data_vars(source.user_data, &resolved, ctx, ns).await? {
            Ok(u) => u,
            Err(problem) => return Ok(Err(problem)),
        };
    if !user_data_secret_name.is_empty()
        && !resolved.uses(template::USER_DATA_BASE64)
        && placement.elsewhere(ns)
    {
        // KubeVirt reads a secretRef in the VM's namespace, where the desk's Secret is not.
        return Ok(Err(RenderProblem::UserData(format!(
            "{} hands KubeVirt the user-data Secret by name, but VMs live in namespace {vm_ns} (--vm-namespace), where KubeVirt cannot read Secret {user_data_secret_name} of namespace {ns}; use a template with ${{user_data_base64}}",
            resolved.describe()
        ))));
    }
    let vars = TemplateVars {
        vm_name,
        namespace: vm_ns.into(),
        cyberdesk_name,
        user_data_base64,
        user_data_secret_name,
    };
    Ok(template::render(&template, &vars, ownership)
        .map_err(|e| RenderProblem::Template(e.to_string())))
}
