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

/// Default prefix of every VM (and VMI) name: `cyberdesk-<cyberdesk name>` (see
/// `model::placement` for `--vm-name-prefix`).
pub const VM_PREFIX: &str = "cyberdesk-";

pub const LABEL_APP: &str = "app";
pub const LABEL_APP_VALUE: &str = "cyberdesk";
pub const LABEL_INSTANCE: &str = "cyberdesk-instance";
/// The owning desk's namespace, on its VM and VMI: maps their events to the desk when the
/// VM lives in another namespace (`--vm-namespace`).
pub const LABEL_DESK_NAMESPACE: &str = "cyberdesk.io/desk-namespace";
/// The owning desk's uid, on its VM and VMI: ownership where an ownerReference cannot be.
pub const LABEL_DESK_UID: &str = "cyberdesk.io/desk-uid";
pub const LABEL_MANAGED_BY: &str = "managed-by";
pub const LABEL_K8S_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "cyberdesk-operator";

/// Warm pools: the pool a VM was booted for, on the VM and its template (so on the VMI).
/// It stays after a desk claims the VM, so the pool can count what it handed out.
pub const LABEL_POOL: &str = "cyberdesk.io/pool";
/// A pool VM's state: [`POOL_STATE_AVAILABLE`] until one desk claims it, then
/// [`POOL_STATE_CLAIMED`] for good. The claim tests the old value in the same write.
pub const LABEL_POOL_STATE: &str = "cyberdesk.io/pool-state";
pub const POOL_STATE_AVAILABLE: &str = "available";
pub const POOL_STATE_CLAIMED: &str = "claimed";
/// A pool VM the pool took back to delete it (scale-down, failure, the pool deleted): set
/// by a patch that tests `available`, so a claim and a retirement never both succeed.
pub const POOL_STATE_RETIRING: &str = "retiring";
/// Pool VMs are named `cyberdesk-pool-<pool>-<5 characters>`, whatever `--vm-name-prefix`.
pub const POOL_VM_PREFIX: &str = "cyberdesk-pool-";
/// When a desk claimed a pool VM (RFC 3339): the desk's lifetime counts from here.
pub const ANNOTATION_CLAIMED_AT: &str = "cyberdesk.io/claimed-at";
/// Keeps a CyberdeskPool until its unclaimed VMs are gone.
pub const POOL_FINALIZER: &str = "cyberdesk.io/pool-cleanup";
