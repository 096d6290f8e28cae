//! The one typed model both halves of the operator share: the Cyberdesk CRD, the few
//! KubeVirt fields we read and write, and the names the whole system agrees on.

pub mod conditions;
pub mod cyberdesk;
pub mod desk_namespaces;
pub mod kubevirt;
pub mod names;
pub mod placement;
pub mod pool;

pub use conditions::{Condition, ConditionStatus};
pub use cyberdesk::{
    Cyberdesk, CyberdeskPhase, CyberdeskSpec, CyberdeskStatus, Delivery, DeliveryOutcome,
    LegacyStatus, Notifications, SecretKeyRef, TimeoutAction, VmSource,
};
pub use desk_namespaces::DeskNamespaces;
pub use kubevirt::{VirtualMachine, VirtualMachineInstance};
pub use placement::Placement;
pub use pool::{CyberdeskPool, CyberdeskPoolSpec, CyberdeskPoolStatus};
