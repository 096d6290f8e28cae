//! The few write patterns both controllers use, each guarded against lost updates.

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::Error;
use super::status::finalizers_without;

/// Who the simulator's writes show up as in `managedFields`.
const FIELD_MANAGER: &str = "virt-controller";

pub(super) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// JSON merge patch carrying the object's resourceVersion, so it fails with 409 instead
/// of overwriting a change made since `obj` was read. Never put `null`s in `patch`: merge
/// patches delete those fields. `Ok(None)`: the object is gone.
pub(super) async fn patch_guarded(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    mut patch: Value,
) -> Result<Option<DynamicObject>, Error> {
    if let Some(root) = patch.as_object_mut() {
        let meta = root.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), json!(obj.resource_version()));
        }
    }
    match api
        .patch(&obj.name_any(), &patch_params(), &Patch::Merge(&patch))
        .await
    {
        Ok(updated) => Ok(Some(updated)),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// PUT of a modified object read earlier: its resourceVersion guards the write. Used for
/// VMI status, because a merge patch would strip the `null` condition times KubeVirt
/// writes. `Ok(None)`: the object is gone.
pub(super) async fn replace_guarded(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
) -> Result<Option<DynamicObject>, Error> {
    match api.replace(&obj.name_any(), &post_params(), obj).await {
        Ok(updated) => Ok(Some(updated)),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Drops `finalizer` from `obj`, keeping every other one. A no-op when it is absent.
pub(super) async fn remove_finalizer(
    api: &Api<DynamicObject>,
    obj: &DynamicObject,
    finalizer: &str,
) -> Result<Option<DynamicObject>, Error> {
    let remaining = finalizers_without(&obj.metadata, finalizer);
    if remaining.len() == obj.finalizers().len() {
        return Ok(Some(obj.clone()));
    }
    patch_guarded(api, obj, json!({"metadata": {"finalizers": remaining}})).await
}

/// The message of a request the apiserver refused for good (4xx other than conflicts and
/// throttling): worth reporting on the VM, not worth retrying at once.
pub(super) fn refusal(e: &kube::Error) -> Option<String> {
    match e {
        kube::Error::Api(s) if (400..500).contains(&s.code) && s.code != 409 && s.code != 429 => {
            Some(s.message.clone())
        }
        _ => None,
    }
}
