//! The `CyberdeskPool` custom resource (cyberdesk.io/v1alpha1): VMs booted ahead of time,
//! which desks naming the pool (`spec.pool`) claim instead of waiting for a boot.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::cyberdesk::SecretKeyRef;

/// Longest pool name: its VMs are named `<prefix>pool-<pool>-<5 characters>`, which must
/// fit in 63 with the default prefix `cyberdesk-`.
pub const MAX_POOL_NAME: usize = 42;
/// Largest `spec.size` the schema accepts.
pub const MAX_POOL_SIZE: i32 = 500;
/// VMs a pool boots at once unless `spec.maxBooting` says otherwise.
pub const DEFAULT_MAX_BOOTING: i32 = 10;
/// How long an unclaimed pool VM lives unless `spec.maxIdleMs` says otherwise: 4 h. A VM
/// carrying the pool's user data never waits forever for a desk.
pub const DEFAULT_MAX_IDLE_MS: i64 = 4 * 3_600_000;
/// Shortest `spec.maxIdleMs`: 1 min (a VM must have time to boot and be claimed).
pub const MIN_MAX_IDLE_MS: i64 = 60_000;
/// Longest `spec.maxIdleMs`: 7 days, the shipped desk ceiling (a policy may cap it lower).
pub const MAX_MAX_IDLE_MS: i64 = 7 * 86_400_000;

/// A warm pool: the operator keeps `spec.size` VMs booted and ready; a Cyberdesk with
/// `spec.pool` takes one of them in a single guarded write instead of booting its own.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "cyberdesk.io",
    version = "v1alpha1",
    kind = "CyberdeskPool",
    plural = "cyberdeskpools",
    singular = "cyberdeskpool",
    namespaced,
    status = "CyberdeskPoolStatus",
    shortname = "cdp",
    // No category: kubectl expands a category before a singular name, and the desks'
    // category is "cyberdesk", their singular; sharing it would break `kubectl get cyberdesk X`.
    doc = "VMs booted ahead of time for the Cyberdesks of this namespace that name the pool.",
    printcolumn = r#"{"name": "Ready", "type": "integer", "jsonPath": ".status.ready", "description": "Booted VMs waiting for a desk"}"#,
    printcolumn = r#"{"name": "Booting", "type": "integer", "jsonPath": ".status.booting", "description": "VMs still booting"}"#,
    printcolumn = r#"{"name": "Claimed", "type": "integer", "jsonPath": ".status.claimed", "description": "VMs handed to desks that still exist"}"#,
    printcolumn = r#"{"name": "Desired", "type": "integer", "jsonPath": ".spec.size", "description": "VMs to keep ready"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 42").field_path(".metadata.name").message(
        "metadata.name must be no more than 42 characters: the pool's VMs are named cyberdesk-pool-<name>-<5 characters>, which must fit in 63"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(oldSelf.template) || (has(self.template) && self.template == oldSelf.template)",
     "message": "spec.template is immutable once set"},
    {"rule": "!has(oldSelf.userDataSecretRef) || (has(self.userDataSecretRef) && self.userDataSecretRef == oldSelf.userDataSecretRef)",
     "message": "spec.userDataSecretRef is immutable once set"}
]))]
#[serde(rename_all = "camelCase")]
pub struct CyberdeskPoolSpec {
    /// How many booted VMs to keep ready for desks. 0 keeps none (and deletes the
    /// unclaimed ones).
    #[schemars(range(min = 0, max = 500))]
    pub size: i32,

    /// How many VMs boot at once while the pool fills (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_booting: Option<i32>,

    /// Name of a VM template ConfigMap in the operator's namespace, under the same opt-in
    /// and allowed-namespace rules as a desk's. Defaults to the operator's template.
    /// Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub template: Option<String>,

    /// Cloud-init user data shared by every VM of the pool, from a Secret in the pool's
    /// namespace. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<SecretKeyRef>,

    /// Longest an unclaimed VM lives, in milliseconds from its creation (default 14400000,
    /// 4 h; 60000 to 604800000): an older one, booting or ready, is deleted and a fresh one
    /// booted. The policies judge it as a desk's timeoutMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 60000, max = 604800000))]
    pub max_idle_ms: Option<i64>,
}

/// Observed state of a pool, written only by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CyberdeskPoolStatus {
    /// Booted VMs waiting for a desk.
    #[serde(default)]
    pub ready: i32,
    /// VMs created for the pool that are not ready yet.
    #[serde(default)]
    pub booting: i32,
    /// VMs the pool handed to desks, still in use.
    #[serde(default)]
    pub claimed: i32,
    /// The .metadata.generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (the pool holds spec.size ready VMs) and TemplateValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl CyberdeskPool {
    pub fn max_booting(&self) -> i32 {
        self.spec.max_booting.unwrap_or(DEFAULT_MAX_BOOTING).max(1)
    }

    /// How long an unclaimed VM of the pool may live, held to the schema's range (a pool
    /// stored before the webhook or the range existed gets the nearest bound).
    pub fn max_idle(&self) -> jiff::SignedDuration {
        let ms = self
            .spec
            .max_idle_ms
            .unwrap_or(DEFAULT_MAX_IDLE_MS)
            .clamp(MIN_MAX_IDLE_MS, MAX_MAX_IDLE_MS);
        jiff::SignedDuration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests;
