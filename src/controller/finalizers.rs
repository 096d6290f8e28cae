//! Adding and releasing a finalizer, for desks and pools alike: JSON patches whose first
//! operation tests the resourceVersion the pass read, so a stale read is refused rather
//! than overwriting someone else's finalizer list.

use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::controller::error::Error;

fn test_version<K: Resource>(obj: &K) -> Value {
    json!({"op": "test", "path": "/metadata/resourceVersion", "value": obj.resource_version().unwrap_or_default()})
}

/// The ops that add `finalizer` to `obj`'s list (creating the list when there is none).
pub fn adding<K: Resource>(obj: &K, finalizer: &str) -> Value {
    let add = if obj.meta().finalizers.is_none() {
        json!({"op": "add", "path": "/metadata/finalizers", "value": [finalizer]})
    } else {
        json!({"op": "add", "path": "/metadata/finalizers/-", "value": finalizer})
    };
    json!([test_version(obj), add])
}

/// The ops that leave `obj`'s list without `finalizer`.
pub fn releasing<K: Resource>(obj: &K, finalizer: &str) -> Value {
    let remaining: Vec<&String> = obj
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    json!([test_version(obj), {"op": "replace", "path": "/metadata/finalizers", "value": remaining}])
}

/// The ops that replace `obj`'s list with `list`.
pub fn replacing<K: Resource>(obj: &K, list: &[String]) -> Value {
    json!([test_version(obj), {"op": "replace", "path": "/metadata/finalizers", "value": list}])
}

/// Sends `ops` (from the functions above) for `obj`; the object as stored.
pub async fn patch<K>(api: &Api<K>, obj: &K, ops: Value) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    super::patch::json(api, &obj.name_any(), ops, "finalizer patch").await
}

/// Adds `finalizer`; the object as stored.
pub async fn add<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<K, Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    patch(api, obj, adding(obj, finalizer)).await
}

/// Releases `finalizer`; an object already gone is fine.
pub async fn release<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match patch(api, obj, releasing(obj, finalizer)).await {
        Ok(_) => Ok(()),
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
