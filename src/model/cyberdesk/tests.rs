use super::*;
use kube::CustomResourceExt;

#[test]
fn crd_has_names_columns_and_status() {
    let crd = Cyberdesk::crd();
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some("cyberdesks.cyberdesk.io")
    );
    let names = &crd.spec.names;
    assert_eq!(
        names.short_names.as_deref(),
        Some(&["cd".to_string(), "cds".to_string()][..])
    );
    let version = &crd.spec.versions[0];
    let columns: Vec<&str> = version
        .additional_printer_columns
        .as_ref()
        .map(|c| c.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(columns, ["Phase", "VM", "IP", "Expiry", "Age"]);
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
}

#[test]
fn schema_guards_timeout_and_action() {
    let crd = serde_json::to_value(Cyberdesk::crd()).expect("crd serializes");
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    assert_eq!(spec["timeoutMs"]["minimum"], serde_json::json!(1000.0));
    assert_eq!(
        spec["timeoutAction"]["enum"],
        serde_json::json!(["Delete", "Stop"])
    );
    assert!(
        spec["timeoutMs"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("milliseconds"))
    );
}

#[test]
fn spec_roundtrips_camel_case() {
    let spec: CyberdeskSpec = serde_json::from_value(serde_json::json!({
        "timeoutMs": 5000, "timeoutAction": "Stop",
        "userDataSecretRef": {"name": "s", "key": "userdata"}
    }))
    .expect("parses");
    assert_eq!(spec.timeout_ms, Some(5000));
    assert_eq!(spec.timeout_action, Some(TimeoutAction::Stop));
    let back = serde_json::to_value(&spec).expect("serializes");
    assert_eq!(back["userDataSecretRef"]["key"], "userdata");
    assert!(back.get("template").is_none());
}
