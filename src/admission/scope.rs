//! Rules of the validating webhook about where a desk or pool may be and how much metadata
//! it may carry (pure). They are judged before every other rule and on every CREATE and
//! UPDATE, bookkeeping included, since they protect the operator rather than a tenant.

use serde_json::{Map, Value};

use crate::model::DeskNamespaces;
use crate::verdict::{Operation, Verdict};

pub const NAMESPACE_FIELD: &str = "metadata.namespace";
pub const LABELS_FIELD: &str = "metadata.labels";
pub const ANNOTATIONS_FIELD: &str = "metadata.annotations";

/// `--max-metadata-bytes` unless set: far above what a desk's own labels and kubectl's
/// last-applied annotation take, far below what would strain the leader's memory.
pub const DEFAULT_MAX_METADATA_BYTES: usize = 64 * 1024;

/// What the rules need from the flags.
#[derive(Clone, Debug)]
pub struct ScopeConfig {
    /// `--desk-namespaces`.
    pub desk_namespaces: DeskNamespaces,
    /// `--max-metadata-bytes`: labels and annotations together, keys and values.
    pub max_metadata_bytes: usize,
}

impl Default for ScopeConfig {
    /// Every namespace, the default limit.
    fn default() -> Self {
        Self {
            desk_namespaces: DeskNamespaces::default(),
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

/// Denies a new desk or pool outside `--desk-namespaces`. An existing one may still be
/// changed (its finalizers removed, say): the operator builds nothing for it anyway.
pub fn check_namespace(
    namespaces: &DeskNamespaces,
    namespace: &str,
    operation: Operation,
    verdict: &mut Verdict,
) {
    if operation != Operation::Create {
        return;
    }
    if let Some(why) = namespaces.refusal(namespace) {
        verdict.deny(NAMESPACE_FIELD, why);
    }
}

/// Bytes of a labels or annotations map: keys and values, as Kubernetes counts an
/// annotation's size. A value that is not a string counts as its JSON text.
fn map_bytes(map: Option<&Value>) -> usize {
    let Some(Value::Object(map)) = map else {
        return 0;
    };
    map.iter()
        .map(|(k, v)| {
            k.len()
                + match v {
                    Value::String(s) => s.len(),
                    other => other.to_string().len(),
                }
        })
        .sum()
}

fn metadata(object: &Value) -> Option<&Map<String, Value>> {
    object.get("metadata").and_then(Value::as_object)
}

/// (labels, annotations) bytes of an object.
fn metadata_bytes(object: &Value) -> (usize, usize) {
    let meta = metadata(object);
    (
        map_bytes(meta.and_then(|m| m.get("labels"))),
        map_bytes(meta.and_then(|m| m.get("annotations"))),
    )
}

/// Denies labels and annotations that together take more than `max` bytes. An update is
/// denied only when it grows them: an object stored before the limit (or with a higher
/// one) can still have its finalizers removed or its labels trimmed.
pub fn check_metadata_size(object: &Value, old: Option<&Value>, max: usize, verdict: &mut Verdict) {
    let (labels, annotations) = metadata_bytes(object);
    let total = labels + annotations;
    if total <= max {
        return;
    }
    if let Some(old) = old {
        let (old_labels, old_annotations) = metadata_bytes(old);
        if total <= old_labels + old_annotations {
            return;
        }
    }
    for (field, bytes, what) in [
        (LABELS_FIELD, labels, "labels"),
        (ANNOTATIONS_FIELD, annotations, "annotations"),
    ] {
        if bytes > 0 {
            verdict.deny(
                field,
                format!(
                    "the {what} take {bytes} bytes (keys and values); labels and annotations together may take at most {max} bytes (--max-metadata-bytes), here {total}"
                ),
            );
        }
    }
}

/// Both rules, for a desk or a pool under review.
pub fn judge(
    cfg: &ScopeConfig,
    namespace: &str,
    operation: Operation,
    object: &Value,
    old: Option<&Value>,
    verdict: &mut Verdict,
) {
    check_namespace(&cfg.desk_namespaces, namespace, operation, verdict);
    check_metadata_size(object, old, cfg.max_metadata_bytes, verdict);
}

#[cfg(test)]
mod tests;
