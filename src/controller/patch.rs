//! Sending a JSON patch (RFC 6902) as the operator's field manager. The controller's
//! guarded writes are JSON patches: their `test` ops make a write made on a stale read fail
//! instead of overwriting what it did not see.

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::Value;

use crate::controller::error::Error;
use crate::model::names;

/// Server-side apply as the operator's field manager, taking over fields others set.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

/// A merge or JSON patch recorded under the operator's field manager.
pub fn plain_params() -> PatchParams {
    PatchParams {
        field_manager: Some(names::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// A create recorded under the operator's field manager.
pub fn create_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(names::FIELD_MANAGER.into()),
    }
}

/// Sends `ops` to the object `name`; the object as stored. `what` names the patch in the
/// error when `ops` is not a JSON patch.
pub async fn json<K>(api: &Api<K>, name: &str, ops: Value, what: &'static str) -> Result<K, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|source| Error::Serialization { what, source })?;
    Ok(api
        .patch(name, &plain_params(), &Patch::<()>::Json(patch))
        .await?)
}

#[cfg(test)]
mod tests;
