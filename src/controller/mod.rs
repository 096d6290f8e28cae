//! The reconciler: Cyberdesk → VirtualMachine, status tracking, exact timeouts and
//! finalizer cleanup. Pure decisions live in template/status/expiry; reconcile.rs is I/O.

pub mod expiry;
pub mod status;
pub mod template;
