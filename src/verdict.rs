//! What validation and policies answer: violations with their field paths, and the
//! operation being judged. Shared by `validate` and `policy`, which therefore do not import
//! each other.

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

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    pub(crate) fn deny(&mut self, field: &str, message: impl Into<String>) {
        self.violations.push(FieldViolation {
            field: field.to_string(),
            message: message.into(),
        });
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}
