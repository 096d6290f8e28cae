//! Where a desk's VM lives and what it is called: beside the desk as `cyberdesk-<name>` by
//! default, or in one namespace for all desks (`--vm-namespace`) under another prefix
//! (`--vm-name-prefix`), as the platform the operator replaces lays them out.

use std::collections::BTreeMap;

use super::names;

/// Longest name a Kubernetes label value, and so a VM name, may have.
const DNS_LABEL_MAX: usize = 63;

/// The VM namespace and name rule, from the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// One namespace for every VM; `None` puts each VM beside its desk.
    pub namespace: Option<String>,
    /// Put before the desk name to make the VM name (may be empty).
    pub prefix: String,
}

impl Default for Placement {
    fn default() -> Self {
        Self {
            namespace: None,
            prefix: names::VM_PREFIX.into(),
        }
    }
}

impl Placement {
    /// The namespace of the VM of a desk in `desk_namespace`.
    pub fn vm_namespace<'a>(&'a self, desk_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(desk_namespace)
    }

    /// The VM (and VMI) name of desk `desk_name`.
    pub fn vm_name(&self, desk_name: &str) -> String {
        format!("{}{desk_name}", self.prefix)
    }

    /// Does a desk in `desk_namespace` have its VM in another namespace? Then the VM cannot
    /// carry an ownerReference (Kubernetes ignores owners in other namespaces, and its
    /// garbage collector would delete the VM): ownership is in its labels.
    pub fn elsewhere(&self, desk_namespace: &str) -> bool {
        self.namespace
            .as_deref()
            .is_some_and(|ns| ns != desk_namespace)
    }
}

/// The labels the operator puts on a VM and its template (so on the VMI too): what the
/// platform's tools select by, and the desk that owns it, by namespace, name and uid.
pub fn vm_labels(
    desk_namespace: &str,
    desk_name: &str,
    desk_uid: &str,
) -> BTreeMap<String, String> {
    [
        (names::LABEL_APP, names::LABEL_APP_VALUE),
        (names::LABEL_INSTANCE, desk_name),
        (names::LABEL_DESK_NAMESPACE, desk_namespace),
        (names::LABEL_DESK_UID, desk_uid),
        (names::LABEL_MANAGED_BY, names::MANAGED_BY_VALUE),
        (names::LABEL_K8S_MANAGED_BY, names::MANAGED_BY_VALUE),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Why `prefix` cannot start a VM name, if it cannot: lowercase letters, digits and '-',
/// starting with a letter or digit, leaving room for a name.
pub fn prefix_problem(prefix: &str) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    if prefix.len() >= DNS_LABEL_MAX {
        return Some(format!(
            "is {} characters; it must leave room for the desk name in 63",
            prefix.len()
        ));
    }
    if !prefix
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Some("may only hold lowercase letters, digits and '-'".into());
    }
    if prefix.starts_with('-') {
        return Some("must start with a letter or digit".into());
    }
    None
}

/// Why `ns` is not a namespace name, if it is not.
pub fn namespace_problem(ns: &str) -> Option<String> {
    let ok = !ns.is_empty()
        && ns.len() <= DNS_LABEL_MAX
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    (!ok).then(|| "must be a DNS-1123 label (lowercase letters, digits and '-', at most 63)".into())
}

#[cfg(test)]
mod tests;
