//! Invariants checked on arbitrary input: by the fuzz targets in `fuzz/` (`make fuzz`) and,
//! over the committed seed corpus, by the unit tests below (`make test`). Each function
//! panics when an invariant breaks, which is what a fuzzer reports; none panics on input
//! the code handles correctly, however hostile.

use std::sync::{Arc, OnceLock};

use serde_json::{Value, json};

use crate::admission::authz::NoAccessReviews;
use crate::admission::mutate::{MutateConfig, defaults_patch};
use crate::admission::validate::{self, ValidateConfig, ValidationInput};
use crate::admission::{Admission, Webhook, review_json};
use crate::catalog::Catalog;
use crate::metrics::Metrics;
use crate::model::names;
use crate::policy::{Policy, PolicySet, PolicyStore};
use crate::template::{self, Ownership, TemplateVars};

/// The policies shipped in `policies/`, so the fuzzer exercises real schemas.
fn shipped_policies() -> PolicySet {
    let sources = [
        (
            "max-timeout.json",
            include_str!("../policies/max-timeout.json"),
        ),
        (
            "long-session-warning.json",
            include_str!("../policies/long-session-warning.json"),
        ),
        (
            "team-a-templates.json",
            include_str!("../policies/team-a-templates.json"),
        ),
    ]
    .map(|(n, t)| (n.to_string(), t.as_bytes().to_vec()));
    PolicySet::load(&sources).unwrap_or_default()
}

fn admission() -> &'static Admission {
    static ADMISSION: OnceLock<Admission> = OnceLock::new();
    ADMISSION.get_or_init(|| Admission {
        mutate: MutateConfig {
            default_timeout_ms: 3_600_000,
        },
        validate: ValidateConfig {
            min_timeout_ms: 1_000,
            max_timeout_ms: 30 * 86_400_000,
            vm_name_prefix: crate::model::names::VM_PREFIX.into(),
        },
        scope: crate::admission::scope::ScopeConfig::default(),
        policies: PolicyStore::new(shipped_policies()),
        metrics: Metrics::new("fuzz", &[]).unwrap_or_else(|e| panic!("metrics: {e}")),
        templates: Catalog::fixed("cyberdesk-system", names::TEMPLATE_CONFIGMAP, vec![]),
        secret_access: Arc::new(NoAccessReviews),
        operator_username: "system:serviceaccount:cyberdesk-system:cyberdesk-operator".into(),
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"))
    })
}

/// A body through the whole admission path, as both webhooks. A body that parses as a
/// review with a uid is answered with that uid; every denial that is a validation verdict
/// (code 422) names a field; a mutate patch applies to its object, leaves a valid object
/// valid, and mutating the result again yields no patch.
pub fn admission_body(data: &[u8]) {
    let a = admission();
    let uid = serde_json::from_slice::<Value>(data).ok().and_then(|v| {
        v.pointer("/request/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    for webhook in [Webhook::Mutate, Webhook::Validate] {
        let Ok(review) = runtime().block_on(a.review(webhook, data)) else {
            continue;
        };
        let wire = review_json(review).unwrap_or_else(|e| panic!("response not encodable: {e}"));
        let wire: Value =
            serde_json::from_slice(&wire).unwrap_or_else(|e| panic!("response not JSON: {e}"));
        let response = &wire["response"];
        if let Some(uid) = &uid {
            assert_eq!(
                response["uid"].as_str(),
                Some(uid.as_str()),
                "uid not echoed"
            );
        }
        if response["status"]["code"] == 422 {
            let causes = response["status"]["details"]["causes"].as_array();
            assert!(
                causes.is_some_and(|c| !c.is_empty()),
                "a validation denial without causes: {response}"
            );
        }
        if let Some(Value::String(_)) = response.get("patch") {
            assert_eq!(response["patchType"], "JSONPatch");
        }
    }
    if let Ok(v) = serde_json::from_slice::<Value>(data)
        && let Some(object) = v.pointer("/request/object")
    {
        mutation_is_idempotent(object);
    }
}

fn validates(object: &Value) -> bool {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = ValidationInput {
        operation: crate::verdict::Operation::Create,
        name,
        namespace: "team-a",
        object,
        old_object: None,
    };
    validate::validate(
        &input,
        &admission().validate,
        &admission().policies.current(),
    )
    .allowed()
}

/// The defaults patch applies to the object it was made for; a valid object stays valid;
/// the patched object needs no more defaults.
pub fn mutation_is_idempotent(object: &Value) {
    let cfg = &admission().mutate;
    let patch = defaults_patch(object, cfg);
    let mut patched = object.clone();
    if let Err(e) = json_patch::patch(&mut patched, &patch.0) {
        panic!(
            "the defaults patch does not apply to its object: {e}\npatch: {patch:?}\nobject: {object}"
        );
    }
    if validates(object) {
        assert!(
            validates(&patched),
            "defaulting made a valid object invalid: {patched}"
        );
    }
    let again = defaults_patch(&patched, cfg);
    assert!(
        again.0.is_empty(),
        "defaults are not idempotent: {again:?} on {patched}"
    );
}

/// A template and variable values from arbitrary bytes (the first line holds the values,
/// separated by `\u{1f}`; the rest is the template). Rendering yields one
/// kubevirt.io/v1 VirtualMachine in the desk's namespace, with the fields the operator owns
/// exactly as it set them, or an error.
pub fn template_render(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (values, body) = text.split_once('\n').unwrap_or(("", &text));
    let mut values = values.split('\u{1f}').map(str::to_string);
    let mut next = || values.next().unwrap_or_default();
    let vars = TemplateVars {
        vm_name: "cyberdesk-desk".into(),
        namespace: "team-a".into(),
        cyberdesk_name: "desk".into(),
        user_data_base64: next(),
        user_data_secret_name: next(),
    };
    let Ok(parsed) = template::parse(body) else {
        return;
    };
    let owner = json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "name": "desk",
                       "uid": "u-1", "controller": true, "blockOwnerDeletion": true});
    let ownership = Ownership {
        owner_reference: Some(owner.clone()),
        labels: crate::model::placement::vm_labels("team-a", "desk", "u-1"),
    };
    let Ok(vm) = template::render(&parsed, &vars, &ownership) else {
        return;
    };
    assert_eq!(vm["apiVersion"], "kubevirt.io/v1");
    assert_eq!(vm["kind"], "VirtualMachine");
    assert_eq!(vm["metadata"]["name"], "cyberdesk-desk");
    assert_eq!(vm["metadata"]["namespace"], "team-a");
    assert_eq!(vm["metadata"]["ownerReferences"], json!([owner]));
    assert_eq!(vm["spec"]["runStrategy"], "Always");
    assert!(vm["spec"].get("running").is_none());
    assert!(vm.get("status").is_none());
    for (k, v) in &ownership.labels {
        assert_eq!(vm["metadata"]["labels"][k], v.as_str(), "label {k}");
        assert_eq!(
            vm["spec"]["template"]["metadata"]["labels"][k],
            v.as_str(),
            "template label {k}"
        );
    }
}

/// A policy compiled from arbitrary bytes is refused with an error or, once compiled, judges
/// any object without panicking, and every finding it makes is reported.
pub fn policy_compile(data: &[u8]) {
    let Ok(policy) = Policy::compile("fuzz.json", data) else {
        return;
    };
    let objects = [
        json!({"apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk", "metadata": {"name": "d"}, "spec": {}}),
        json!({"metadata": {"labels": {"team": "a"}}, "spec": {"timeoutMs": 7_200_000, "template": "x"}}),
        json!([1, "two", null]),
    ];
    for object in objects {
        for finding in policy.check(&object) {
            let _ = policy.violation(finding);
        }
    }
}

#[cfg(test)]
mod tests;
