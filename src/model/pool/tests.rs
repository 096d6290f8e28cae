use super::*;
use kube::CustomResourceExt;

#[test]
fn crd_has_the_pool_columns_and_rules() {
    let crd = CyberdeskPool::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("cyberdeskpools.cyberdesk.io")
    );
    let version = &crd.spec.versions[0];
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(columns, ["Ready", "Booting", "Claimed", "Desired", "Age"]);
    assert_eq!(
        crd.spec.names.categories, None,
        "see the comment on the kube attribute"
    );
    let json = serde_json::to_value(&crd).expect("crd serializes");
    let spec = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        spec["properties"]["size"]["maximum"],
        serde_json::json!(500.0)
    );
    assert_eq!(
        spec["x-kubernetes-validations"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        spec["properties"]["maxIdleMs"]["minimum"],
        serde_json::json!(60000.0)
    );
    assert_eq!(
        spec["properties"]["maxIdleMs"]["maximum"],
        serde_json::json!(604800000.0)
    );
    assert_eq!(MAX_POOL_SIZE, 500);
    assert_eq!(MAX_POOL_NAME, 42);
}
