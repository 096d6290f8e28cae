//! Reconcile errors: typed, each with a metric label, retried with backoff.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serialize {what}: {source}")]
    Serialization {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("Cyberdesk has no namespace")]
    NoNamespace,
    #[error("Cyberdesk has no uid, so no VM can name it as its owner")]
    NoUid,
    #[error("the pass did not settle within its step limit")]
    Unsettled,
    #[error("the VM and VMI caches stopped before they were filled")]
    CachesGone,
}

impl Error {
    /// Value of `cyberdesk_reconcile_errors_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialization { .. } => "serialization",
            Error::NoNamespace | Error::NoUid => "invalid_object",
            Error::Unsettled => "unsettled",
            Error::CachesGone => "caches",
        }
    }
}

/// Every label `metric_label` can return, so the metric family is initialised at start-up.
pub const ERROR_LABELS: &[&str] = &[
    "kube",
    "serialization",
    "invalid_object",
    "unsettled",
    "caches",
];
