//! Sending a JSON patch (RFC 6902) as the operator's field manager. The controller's
//! guarded writes are JSON patches: their `test` ops make a write made on a stale read fail
//! instead of overwriting what it did not see.

use kube::Api;
use kube::api::Patch;
use serde_json::Value;

use crate::controller::error::Error;
use crate::controller::reconcile::plain_pp;

/// Sends `ops` to the object `name`; the object as stored. `what` names the patch in the
/// error when `ops` is not a JSON patch.
pub async fn json<K>(api: &Api<K>, name: &str, ops: Value, what: &'static str) -> Result<K, Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|source| Error::Serialization { what, source })?;
    Ok(api
        .patch(name, &plain_pp(), &Patch::<()>::Json(patch))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cyberdesk;

    #[tokio::test]
    async fn ops_that_are_no_json_patch_are_refused_before_any_request() {
        // A client whose every request fails: the error must come from the ops, not from it.
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let api: Api<Cyberdesk> = Api::namespaced(client, "n");
        let err = json(&api, "d", serde_json::json!({"op": "add"}), "test patch")
            .await
            .expect_err("not a list of ops");
        assert!(
            matches!(
                err,
                Error::Serialization {
                    what: "test patch",
                    ..
                }
            ),
            "{err}"
        );
    }
}
