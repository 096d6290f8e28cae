//! Defaulting on CREATE (pure).
//!
//! The patch is minimal on purpose: an object that already carries every default gets an
//! empty patch, so the apiserver sees no mutation and `kubectl apply` stays quiet. Shapes we
//! do not understand get an empty patch too — the validating webhook (and the CRD schema)
//! reject them with a proper message, which a half-applied default could only obscure.

use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use serde_json::{Map, Value, json};

use crate::model::TimeoutAction;
use crate::model::names::FINALIZER;

/// Settings the mutating webhook needs.
#[derive(Clone, Debug)]
pub struct MutateConfig {
    pub default_timeout_ms: i64,
}

/// The minimal JSONPatch that defaults `spec.timeoutMs`, `spec.timeoutAction` and adds the
/// finalizer to `object` (a Cyberdesk as raw JSON). Empty when nothing is missing or the
/// object is being deleted.
pub fn defaults_patch(object: &Value, cfg: &MutateConfig) -> Patch {
    Patch(plan(object, cfg).unwrap_or_default())
}

/// `None` means "a shape we do not default": the caller answers with an empty patch.
fn plan(object: &Value, cfg: &MutateConfig) -> Option<Vec<PatchOperation>> {
    let object = object.as_object()?;
    let mut ops = Vec::new();

    let metadata = match object.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return None,
    };
    // An object on its way out must not gain anything, least of all the finalizer that
    // would keep it around.
    if metadata.is_some_and(|m| m.get("deletionTimestamp").is_some_and(|t| !t.is_null())) {
        return Some(Vec::new());
    }

    match object.get("spec") {
        None | Some(Value::Null) => {
            let mut spec = Map::new();
            spec.insert("timeoutMs".into(), json!(cfg.default_timeout_ms));
            spec.insert("timeoutAction".into(), json!(default_action()));
            ops.push(add(&["spec"], Value::Object(spec)));
        }
        Some(Value::Object(spec)) => {
            if is_unset(spec.get("timeoutMs")) {
                ops.push(add(&["spec", "timeoutMs"], json!(cfg.default_timeout_ms)));
            }
            if is_unset(spec.get("timeoutAction")) {
                ops.push(add(&["spec", "timeoutAction"], json!(default_action())));
            }
        }
        Some(_) => return None,
    }

    match metadata.map(|m| m.get("finalizers")) {
        None => ops.push(add(&["metadata"], json!({ "finalizers": [FINALIZER] }))),
        Some(None | Some(Value::Null)) => {
            ops.push(add(&["metadata", "finalizers"], json!([FINALIZER])));
        }
        Some(Some(Value::Array(list))) => {
            if !list.iter().any(|f| f.as_str() == Some(FINALIZER)) {
                ops.push(add(&["metadata", "finalizers", "-"], json!(FINALIZER)));
            }
        }
        Some(Some(_)) => return None,
    }
    Some(ops)
}

fn default_action() -> &'static str {
    TimeoutAction::default().as_str()
}

/// Absent and `null` mean the same to the API (a client sending `null` asks for the default).
fn is_unset(value: Option<&Value>) -> bool {
    value.is_none_or(Value::is_null)
}

fn add(path: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(path.iter().copied()),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MutateConfig {
        MutateConfig {
            default_timeout_ms: 3_600_000,
        }
    }

    /// Applies the patch the way the apiserver would and returns the result.
    fn applied(object: Value) -> (Value, usize) {
        let patch = defaults_patch(&object, &cfg());
        let mut out = object;
        json_patch::patch(&mut out, &patch.0).expect("patch applies");
        (out, patch.0.len())
    }

    fn desk(spec: Value) -> Value {
        json!({
            "apiVersion": "cyberdesk.io/v1alpha1",
            "kind": "Cyberdesk",
            "metadata": {"name": "alice", "namespace": "default"},
            "spec": spec,
        })
    }

    #[test]
    fn empty_spec_gets_every_default() {
        let (out, n) = applied(desk(json!({})));
        assert_eq!(n, 3);
        assert_eq!(out["spec"]["timeoutMs"], json!(3_600_000));
        assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));
        assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
    }

    #[test]
    fn missing_spec_is_created_in_one_op() {
        let mut object = desk(json!({}));
        object.as_object_mut().expect("object").remove("spec");
        let patch = defaults_patch(&object, &cfg());
        assert_eq!(
            patch.0.len(),
            2,
            "one op for /spec, one for the finalizers: {patch:?}"
        );
        let (out, _) = applied(object);
        assert_eq!(
            out["spec"],
            json!({"timeoutMs": 3_600_000, "timeoutAction": "Delete"})
        );
        assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
    }

    #[test]
    fn null_values_count_as_absent() {
        let (out, n) = applied(desk(json!({"timeoutMs": null, "timeoutAction": null})));
        assert_eq!(n, 3);
        assert_eq!(out["spec"]["timeoutMs"], json!(3_600_000));
        assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));

        let mut object = desk(json!({}));
        object["spec"] = Value::Null;
        object["metadata"]["finalizers"] = Value::Null;
        let (out, _) = applied(object);
        assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));
        assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
    }

    #[test]
    fn partial_spec_keeps_what_the_user_set() {
        let (out, n) = applied(desk(json!({"timeoutMs": 5000, "template": "gpu"})));
        assert_eq!(n, 2);
        assert_eq!(out["spec"]["timeoutMs"], json!(5000));
        assert_eq!(out["spec"]["template"], json!("gpu"));
        assert_eq!(out["spec"]["timeoutAction"], json!("Delete"));

        let (out, n) = applied(desk(json!({"timeoutAction": "Stop"})));
        assert_eq!(n, 2);
        assert_eq!(out["spec"]["timeoutAction"], json!("Stop"));
        assert_eq!(out["spec"]["timeoutMs"], json!(3_600_000));
    }

    #[test]
    fn complete_object_gets_an_empty_patch() {
        let mut object = desk(json!({"timeoutMs": 1000, "timeoutAction": "Stop"}));
        object["metadata"]["finalizers"] = json!(["other.io/x", FINALIZER]);
        assert!(defaults_patch(&object, &cfg()).0.is_empty());
    }

    #[test]
    fn other_finalizers_are_kept_and_ours_appended() {
        let mut object = desk(json!({"timeoutMs": 1000, "timeoutAction": "Stop"}));
        object["metadata"]["finalizers"] = json!(["other.io/x"]);
        let patch = defaults_patch(&object, &cfg());
        assert_eq!(patch.0.len(), 1);
        let PatchOperation::Add(op) = &patch.0[0] else {
            panic!("expected add: {patch:?}")
        };
        assert_eq!(op.path.as_str(), "/metadata/finalizers/-");
        let (out, _) = applied(object);
        assert_eq!(
            out["metadata"]["finalizers"],
            json!(["other.io/x", FINALIZER])
        );
    }

    #[test]
    fn empty_finalizer_list_is_appended_to() {
        let mut object = desk(json!({}));
        object["metadata"]["finalizers"] = json!([]);
        let (out, _) = applied(object);
        assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
    }

    #[test]
    fn missing_metadata_is_created() {
        let object = json!({"spec": {"timeoutMs": 1000, "timeoutAction": "Stop"}});
        let (out, n) = applied(object);
        assert_eq!(n, 1);
        assert_eq!(out["metadata"]["finalizers"], json!([FINALIZER]));
    }

    #[test]
    fn deleting_object_gets_nothing() {
        let mut object = desk(json!({}));
        object["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        assert!(defaults_patch(&object, &cfg()).0.is_empty());
        // Not even the finalizer when it is missing.
        object["spec"] = json!({"timeoutMs": 1000, "timeoutAction": "Stop"});
        assert!(defaults_patch(&object, &cfg()).0.is_empty());
    }

    #[test]
    fn configured_default_is_used() {
        let patch = defaults_patch(
            &desk(json!({})),
            &MutateConfig {
                default_timeout_ms: 42_000,
            },
        );
        let mut out = desk(json!({}));
        json_patch::patch(&mut out, &patch.0).expect("applies");
        assert_eq!(out["spec"]["timeoutMs"], json!(42_000));
    }

    #[test]
    fn hostile_shapes_get_an_empty_patch() {
        let odd = [
            json!(null),
            json!(42),
            json!("spec"),
            json!([1, 2, 3]),
            desk(json!([])),
            desk(json!("timeoutMs=5")),
            desk(json!(7)),
            json!({"metadata": "alice", "spec": {}}),
            json!({"metadata": [], "spec": {}}),
            json!({"metadata": {"finalizers": "cyberdesk.io/vm-cleanup"}, "spec": {}}),
            json!({"metadata": {"finalizers": {"a": 1}}, "spec": {}}),
        ];
        for object in odd {
            let patch = defaults_patch(&object, &cfg());
            assert!(patch.0.is_empty(), "{object} gave {patch:?}");
        }
    }

    #[test]
    fn strange_but_valid_shapes_patch_cleanly() {
        // Keys that need escaping elsewhere in the object, non-string finalizers, a
        // deletionTimestamp of null: every patch must apply without error.
        let objects = [
            json!({"metadata": {"finalizers": [1, null, {"x": 1}], "a/b~c": 1}, "spec": {"x~/": 1}}),
            json!({"metadata": {"deletionTimestamp": null}, "spec": {}}),
            json!({}),
        ];
        for object in objects {
            let (out, _) = applied(object.clone());
            assert_eq!(out["spec"]["timeoutAction"], json!("Delete"), "{object}");
            let finalizers = out["metadata"]["finalizers"].as_array().expect("array");
            assert!(finalizers.contains(&json!(FINALIZER)), "{object}");
        }
    }

    #[test]
    fn patch_is_idempotent() {
        let (once, _) = applied(desk(json!({"template": "x"})));
        assert!(defaults_patch(&once, &cfg()).0.is_empty());
    }
}
