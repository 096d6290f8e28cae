//! The `Cyberdesk` custom resource (cyberdesk.io/v1alpha1).

use compact_str::CompactString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;

/// Smallest lifetime the schema accepts (one second).
pub const MIN_TIMEOUT_MS: i64 = 1_000;
/// Largest lifetime the schema accepts (one year); policies usually set a lower ceiling.
pub const SCHEMA_MAX_TIMEOUT_MS: i64 = 365 * 24 * 3_600_000;
/// Default lifetime when the mutating webhook fills in `spec.timeoutMs`.
pub const DEFAULT_TIMEOUT_MS: i64 = 3_600_000;

/// A virtual desktop: the operator creates a KubeVirt VirtualMachine for it, reports its
/// state and stops or deletes it when its time is up.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[kube(
    group = "cyberdesk.io",
    version = "v1alpha1",
    kind = "Cyberdesk",
    plural = "cyberdesks",
    singular = "cyberdesk",
    namespaced,
    status = "CyberdeskStatus",
    shortname = "cd",
    shortname = "cds",
    category = "cyberdesk",
    doc = "A virtual desktop backed by a KubeVirt VirtualMachine that lives for spec.timeoutMs.",
    printcolumn = r#"{"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase"}"#,
    printcolumn = r#"{"name": "VM", "type": "string", "jsonPath": ".status.virtualMachineRef", "description": "VirtualMachine name"}"#,
    printcolumn = r#"{"name": "IP", "type": "string", "jsonPath": ".status.ipAddress", "description": "Address of the desktop"}"#,
    printcolumn = r#"{"name": "Expiry", "type": "string", "jsonPath": ".status.expiryTime", "description": "When the desktop times out"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("size(self.metadata.name) <= 53").field_path(".metadata.name").message(
        "metadata.name must be no more than 53 characters: the VirtualMachine is named cyberdesk-<name>, which must fit in 63"
    )
)]
// The floor the apiserver holds even with the webhooks off or ignored (their rules and
// messages are richer): template and user data cannot change once set.
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(oldSelf.template) || (has(self.template) && self.template == oldSelf.template)",
     "message": "spec.template is immutable once set"},
    {"rule": "!has(oldSelf.userDataSecretRef) || (has(self.userDataSecretRef) && self.userDataSecretRef == oldSelf.userDataSecretRef)",
     "message": "spec.userDataSecretRef is immutable once set"},
    {"rule": "has(self.pool) == has(oldSelf.pool) && (!has(self.pool) || self.pool == oldSelf.pool)",
     "message": "spec.pool is immutable"},
    {"rule": "!has(self.pool) || (!has(self.template) && !has(self.userDataSecretRef))",
     "message": "a desk from a pool takes the pool's template and user data: spec.pool excludes spec.template and spec.userDataSecretRef"}
]))]
#[serde(rename_all = "camelCase")]
pub struct CyberdeskSpec {
    /// Lifetime of the desktop in milliseconds, counted from when its VM started. The
    /// operator stops the VM exactly then. May be changed later to extend or shorten a
    /// session. Defaulted by the admission webhook (one hour unless configured otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_MS, max = SCHEMA_MAX_TIMEOUT_MS))]
    pub timeout_ms: Option<i64>,

    /// What happens at expiry: Delete (the default) deletes the Cyberdesk and with it the
    /// VM; Stop halts the VM and keeps both for inspection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_action: Option<TimeoutAction>,

    /// Name of a ConfigMap (key template.yaml) in the operator's namespace holding the VM
    /// template. Defaults to the operator's configured template. Immutable once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub template: Option<String>,

    /// Cloud-init user data: a Secret in the Cyberdesk's namespace that the requester may
    /// read. The shipped template hands KubeVirt the Secret by name (its key `userdata` or
    /// `userData`); a template with `${user_data_base64}` gets the value inline instead.
    /// Immutable once set. There is no inline user-data field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data_secret_ref: Option<SecretKeyRef>,

    /// Name of a CyberdeskPool in the same namespace: the desk takes one of its booted VMs
    /// at once, or, when none is ready, gets a VM of its own from the pool's template.
    /// Excludes template and userDataSecretRef (the pool's apply). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub pool: Option<String>,
}

/// Where a pooled desk's VM came from.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum VmSource {
    /// A booted VM claimed from the pool.
    Pool,
    /// No pool VM was ready: booted for the desk from the pool's template.
    Cold,
}

impl VmSource {
    pub fn as_str(self) -> &'static str {
        match self {
            VmSource::Pool => "pool",
            VmSource::Cold => "cold",
        }
    }
}

/// What to do with a desktop whose time is up.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum TimeoutAction {
    /// Delete the Cyberdesk; its finalizer deletes the VM first.
    #[default]
    Delete,
    /// Halt the VM (runStrategy Halted) and keep the Cyberdesk and the VM.
    Stop,
}

impl TimeoutAction {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutAction::Delete => "Delete",
            TimeoutAction::Stop => "Stop",
        }
    }
}

/// A key in a Secret in the Cyberdesk's own namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret whose value is the cloud-init user data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Lifecycle phase of a Cyberdesk, derived from its VM and VMI.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CyberdeskPhase {
    /// Admitted; no VM yet.
    Pending,
    /// The VM exists; its VMI does not yet.
    Provisioning,
    /// The VMI is being scheduled or booted.
    Starting,
    /// The VMI runs and is ready.
    Running,
    /// The VM is being halted.
    Stopping,
    /// The lifetime passed; the VM was halted.
    TimedOut,
    /// The VM or VMI failed, or the desktop cannot be built (see conditions).
    Failed,
    /// The Cyberdesk is being deleted; VM cleanup in progress.
    Terminating,
}

impl CyberdeskPhase {
    pub const ALL: [CyberdeskPhase; 8] = [
        CyberdeskPhase::Pending,
        CyberdeskPhase::Provisioning,
        CyberdeskPhase::Starting,
        CyberdeskPhase::Running,
        CyberdeskPhase::Stopping,
        CyberdeskPhase::TimedOut,
        CyberdeskPhase::Failed,
        CyberdeskPhase::Terminating,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CyberdeskPhase::Pending => "Pending",
            CyberdeskPhase::Provisioning => "Provisioning",
            CyberdeskPhase::Starting => "Starting",
            CyberdeskPhase::Running => "Running",
            CyberdeskPhase::Stopping => "Stopping",
            CyberdeskPhase::TimedOut => "TimedOut",
            CyberdeskPhase::Failed => "Failed",
            CyberdeskPhase::Terminating => "Terminating",
        }
    }
}

// The short strings (phase, times, address) are `CompactString`s, kept inline in the cache
// of every desk.
/// Observed state of a Cyberdesk, written only by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CyberdeskStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<CyberdeskPhase>,
    /// Name of the VirtualMachine (and VirtualMachineInstance) in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub virtual_machine_ref: Option<CompactString>,
    /// Phase of the VirtualMachineInstance as KubeVirt reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub vmi_phase: Option<CompactString>,
    /// First IP address of the VMI's first interface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub ip_address: Option<CompactString>,
    /// When the lifetime started (RFC 3339): when the VM was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    #[schemars(with = "Option<String>")]
    pub start_time: Option<CompactString>,
    /// startTime + spec.timeoutMs (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    #[schemars(with = "Option<String>")]
    pub expiry_time: Option<CompactString>,
    /// Human-readable explanation of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub message: Option<CompactString>,
    /// The .metadata.generation the status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// For a desk with spec.pool: Pool (a booted VM was claimed) or Cold (booted for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VmSource>,
    /// Ready, VirtualMachineCreated, TimedOut and TemplateValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Deprecated: the previous operator's status block, kept in step with the fields above
    /// for clients that still read it (operator flag --legacy-status). New clients read
    /// virtualMachineRef, startTime, expiryTime and vmiPhase instead.
    #[serde(
        default,
        rename = "cyberdesk_create",
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy: Option<Box<LegacyStatus>>,
    /// What the operator told the platform (the ready call, the platform's state table),
    /// so that a restart or another leader does not tell it again. Written by the
    /// notifier alone; the reconciler never writes or removes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<Box<Notifications>>,
}

/// Deliveries to the platform, one record per kind.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// The POST to --ready-url once the desk first ran and was ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Delivery>,
    /// The last state written to the platform's table (the Supabase sink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_state: Option<Delivery>,
}

/// How a delivery ended.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Delivered, or GaveUp after the last attempt failed.
    pub outcome: DeliveryOutcome,
    /// What was delivered (the platform state); absent for the ready call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// When the outcome was reached (RFC 3339).
    pub time: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeliveryOutcome {
    #[default]
    Delivered,
    GaveUp,
}

/// The previous operator's `status.cyberdesk_create` block.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LegacyStatus {
    /// Name of the VirtualMachine (and VirtualMachineInstance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_ref: Option<String>,
    /// When the lifetime started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When the desk times out (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_time: Option<String>,
    /// The VirtualMachineInstance's phase when last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_phase: Option<String>,
    /// cyberdesk-operator when this operator wrote the block; absent in the previous
    /// operator's, which is what adoption looks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<String>,
}

impl Cyberdesk {
    pub fn timeout_action(&self) -> TimeoutAction {
        self.spec.timeout_action.unwrap_or_default()
    }

    /// The timeout that applies: `spec.timeoutMs`, or the operator's default for a desk
    /// stored before the mutating webhook set it (or with the webhook off).
    pub fn effective_timeout_ms(&self, default_timeout_ms: i64) -> i64 {
        self.spec.timeout_ms.unwrap_or(default_timeout_ms)
    }
}

#[cfg(test)]
mod tests;
