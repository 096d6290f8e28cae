//! Validation of CREATE and UPDATE (pure). STUB: being written.

use serde_json::Value;

/// One violation, with the field path kubectl shows (`spec.timeoutMs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub message: String,
}

/// Every violation at once, plus soft findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub violations: Vec<FieldViolation>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

#[derive(Clone, Debug)]
pub struct ValidateConfig {
    pub min_timeout_ms: i64,
    pub max_timeout_ms: i64,
}

/// What the validating webhook looks at.
pub struct ValidationInput<'a> {
    pub operation: Operation,
    pub name: &'a str,
    pub namespace: &'a str,
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
}

pub fn validate(
    input: &ValidationInput<'_>,
    cfg: &ValidateConfig,
    policies: &crate::webhook::policy::PolicySet,
) -> Verdict {
    let _ = (input, cfg, policies);
    Verdict::default()
}
