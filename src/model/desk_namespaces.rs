//! Which namespaces the operator serves desks in (`--desk-namespaces`), and the rules that
//! follow from it (pure). With one namespace for every VM (`--vm-namespace`) a VM is
//! named after its desk alone, and the platform keys its records (the ready call, the
//! Supabase row) by the desk name alone: a name must then mean one desk, so desks are
//! served from one namespace only. Outside the set the webhook denies desks and the
//! reconciler builds nothing, adopts nothing and notifies nobody.

/// The namespaces desks are served in; empty serves every namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeskNamespaces(Vec<String>);

impl DeskNamespaces {
    /// From the flag's list; empty entries (a trailing comma, an empty variable) are dropped.
    pub fn new(namespaces: impl IntoIterator<Item = String>) -> Self {
        let mut set: Vec<String> = namespaces.into_iter().filter(|n| !n.is_empty()).collect();
        set.sort();
        set.dedup();
        Self(set)
    }

    /// Does the operator serve desks in `ns`?
    pub fn serves(&self, ns: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|n| n == ns)
    }

    /// Why a desk in `ns` is not served, if it is not: the webhook's denial and the
    /// desk's status say the same.
    pub fn refusal(&self, ns: &str) -> Option<String> {
        (!self.serves(ns)).then(|| {
            format!(
                "this operator serves desks only in namespace {} (--desk-namespaces); {ns} is not one of them",
                self.describe()
            )
        })
    }

    /// Is the operator limited to a set of namespaces? Only then are desks adopted from the
    /// previous operator: that platform kept its desks in one namespace.
    pub fn restricted(&self) -> bool {
        !self.0.is_empty()
    }

    /// The one namespace served, when there is exactly one.
    pub fn single(&self) -> Option<&str> {
        match self.0.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The set as the flag takes it (`a,b`), or `every namespace`.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "every namespace".into()
        } else {
            self.0.join(",")
        }
    }

    /// Why the operator cannot start with this set, if it cannot: with a VM namespace
    /// (`vm_namespace`) or notifications keyed by the desk name alone (`keyed_by_name`),
    /// two desks of one name in two namespaces would share a VM or a record.
    pub fn problem(&self, vm_namespace: bool, keyed_by_name: bool) -> Option<String> {
        if self.single().is_some() {
            return None;
        }
        let why = match (vm_namespace, keyed_by_name) {
            (true, _) => {
                "--vm-namespace names every VM after its desk alone, so desks of one name in two namespaces would share a VM"
            }
            (false, true) => {
                "the Supabase row (and a --ready-url without {namespace}) is keyed by the desk name alone, so desks of one name in two namespaces would share it"
            }
            (false, false) => return None,
        };
        Some(format!(
            "--desk-namespaces must name exactly one namespace (it is {}): {why}",
            if self.0.is_empty() {
                "unset".to_string()
            } else {
                self.describe()
            }
        ))
    }
}

#[cfg(test)]
mod tests;
