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
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg() -> ScopeConfig {
        ScopeConfig {
            desk_namespaces: DeskNamespaces::new(["cyberdesk-system".to_string()]),
            max_metadata_bytes: 100,
        }
    }

    fn with_labels(labels: Value, annotations: Value) -> Value {
        json!({"metadata": {"name": "d", "labels": labels, "annotations": annotations}, "spec": {}})
    }

    #[test]
    fn a_new_desk_outside_the_served_namespaces_is_denied_naming_the_flag() {
        let mut v = Verdict::default();
        let small = with_labels(json!({}), json!({}));
        judge(&cfg(), "team-x", Operation::Create, &small, None, &mut v);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].field, NAMESPACE_FIELD);
        assert!(
            v.violations[0]
                .message
                .contains("cyberdesk-system (--desk-namespaces)"),
            "{:?}",
            v.violations
        );
        let mut v = Verdict::default();
        judge(
            &cfg(),
            "cyberdesk-system",
            Operation::Create,
            &small,
            None,
            &mut v,
        );
        assert!(v.allowed());
        // An existing desk there can still be changed.
        let mut v = Verdict::default();
        judge(
            &cfg(),
            "team-x",
            Operation::Update,
            &small,
            Some(&small),
            &mut v,
        );
        assert!(v.allowed());
        // Unrestricted: every namespace.
        let mut v = Verdict::default();
        let open = ScopeConfig {
            max_metadata_bytes: 100,
            ..Default::default()
        };
        judge(&open, "team-x", Operation::Create, &small, None, &mut v);
        assert!(v.allowed());
    }

    #[test]
    fn labels_and_annotations_over_the_limit_are_denied_with_their_field_paths() {
        let big = with_labels(json!({"a": "x".repeat(60)}), json!({"b": "y".repeat(60)}));
        let mut v = Verdict::default();
        check_metadata_size(&big, None, 100, &mut v);
        let fields: Vec<&str> = v.violations.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, [LABELS_FIELD, ANNOTATIONS_FIELD]);
        assert!(
            v.violations[0].message.contains("61 bytes")
                && v.violations[0]
                    .message
                    .contains("at most 100 bytes (--max-metadata-bytes)")
                && v.violations[0].message.contains("here 122"),
            "{}",
            v.violations[0].message
        );
        // At the limit: allowed.
        let exact = with_labels(json!({"a": "x".repeat(99)}), json!(null));
        let mut v = Verdict::default();
        check_metadata_size(&exact, None, 100, &mut v);
        assert!(v.allowed());
        // Only labels: only metadata.labels is named.
        let labels_only = with_labels(json!({"a": "x".repeat(200)}), json!(null));
        let mut v = Verdict::default();
        check_metadata_size(&labels_only, None, 100, &mut v);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].field, LABELS_FIELD);
    }

    #[test]
    fn an_update_is_denied_only_when_it_grows_past_the_limit() {
        let stored = with_labels(json!({"a": "x".repeat(200)}), json!(null));
        let grown = with_labels(json!({"a": "x".repeat(200), "b": "c"}), json!(null));
        let shrunk = with_labels(json!({"a": "x".repeat(150)}), json!(null));
        let mut v = Verdict::default();
        check_metadata_size(&stored, Some(&stored), 100, &mut v);
        check_metadata_size(&shrunk, Some(&stored), 100, &mut v);
        assert!(v.allowed(), "{:?}", v.violations);
        check_metadata_size(&grown, Some(&stored), 100, &mut v);
        assert!(!v.allowed());
        let small = with_labels(json!({}), json!(null));
        let mut v = Verdict::default();
        check_metadata_size(&stored, Some(&small), 100, &mut v);
        assert!(!v.allowed());
    }
}
