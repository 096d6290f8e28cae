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
mod tests;
