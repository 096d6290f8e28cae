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
