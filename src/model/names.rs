//! Names every part of the system agrees on: labels, finalizer, field managers, ports, resource names.

/// Finalizer that keeps a Cyberdesk until its VM and VMI are gone.
pub const FINALIZER: &str = "cyberdesk.io/vm-cleanup";
/// Field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "cyberdesk-operator";
/// The operator's own namespace (Lease, TLS Secret, template and policy ConfigMaps).
pub const DEFAULT_NAMESPACE: &str = "cyberdesk-system";
pub const LEASE_NAME: &str = "cyberdesk-operator";
pub const TLS_SECRET: &str = "cyberdesk-webhook-tls";
pub const MUTATING_WEBHOOK_CONFIG: &str = "cyberdesk-mutating";
pub const VALIDATING_WEBHOOK_CONFIG: &str = "cyberdesk-validating";
pub const TEMPLATE_CONFIGMAP: &str = "cyberdesk-vm-template";
pub const TEMPLATE_KEY: &str = "template.yaml";
/// Opt-in label: only ConfigMaps carrying it (value `"true"`) are VM templates.
pub const LABEL_TEMPLATE: &str = "cyberdesk.io/template";
/// Optional annotation on a template: comma list of namespace names or globs allowed to use it.
pub const ANNOTATION_ALLOWED_NAMESPACES: &str = "cyberdesk.io/allowed-namespaces";
/// Field manager for the `caBundle` fields alone, so an admin's edits to the rest of the
/// webhook configurations are never taken over or undone.
pub const CA_BUNDLE_FIELD_MANAGER: &str = "cyberdesk-operator-ca-bundle";
pub const POLICIES_CONFIGMAP: &str = "cyberdesk-policies";
pub const SERVICE_NAME: &str = "cyberdesk-operator";
pub const SERVICE_ACCOUNT: &str = "cyberdesk-operator";

/// Prefix of every VM (and VMI) name: `cyberdesk-<cyberdesk name>`.
pub const VM_PREFIX: &str = "cyberdesk-";
/// Longest Cyberdesk name whose VM name still fits a 63-char DNS-1123 label.
pub const MAX_NAME_LEN: usize = 63 - VM_PREFIX.len();

pub const LABEL_APP: &str = "app";
pub const LABEL_APP_VALUE: &str = "cyberdesk";
pub const LABEL_INSTANCE: &str = "cyberdesk-instance";
pub const LABEL_MANAGED_BY: &str = "managed-by";
pub const LABEL_K8S_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "cyberdesk-operator";

/// The VM (and VMI) name for a Cyberdesk.
pub fn vm_name(cyberdesk_name: &str) -> String {
    format!("{VM_PREFIX}{cyberdesk_name}")
}

/// The labels the operator puts on a VM and its template.
pub fn vm_labels(cyberdesk_name: &str) -> std::collections::BTreeMap<String, String> {
    [
        (LABEL_APP, LABEL_APP_VALUE),
        (LABEL_INSTANCE, cyberdesk_name),
        (LABEL_MANAGED_BY, MANAGED_BY_VALUE),
        (LABEL_K8S_MANAGED_BY, MANAGED_BY_VALUE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_name_is_prefixed_and_fits() {
        assert_eq!(vm_name("alice"), "cyberdesk-alice");
        assert_eq!(vm_name(&"a".repeat(MAX_NAME_LEN)).len(), 63);
    }

    #[test]
    fn labels_name_the_instance() {
        let labels = vm_labels("bob");
        assert_eq!(labels.get(LABEL_INSTANCE).map(String::as_str), Some("bob"));
        assert_eq!(labels.len(), 4);
    }
}
