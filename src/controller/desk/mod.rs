//! The desk controller: Cyberdesk → VirtualMachine, status, exact timeouts, cleanup through
//! the finalizer, and adoption of the previous operator's desks. `reconcile.rs` carries out
//! what the pure `plan.rs` decides; `status.rs` and `expiry.rs` compute what the plan
//! writes.

pub mod adoption;
pub mod context;
pub mod expiry;
pub mod own_writes;
pub mod plan;
pub mod reconcile;
pub mod status;
pub mod status_hold;
