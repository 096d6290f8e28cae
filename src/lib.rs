//! cyberdesk-operator: admission webhooks and a reconciler that turn `Cyberdesk` resources
//! into KubeVirt VirtualMachines. The binary (`main.rs`) is a thin CLI over this library,
//! so tests reach everything.

pub mod admin;
pub mod admission;
pub mod backoff;
pub mod catalog;
pub mod certs;
pub mod config;
pub mod controller;
pub mod crd;
pub mod events;
/// Invariants the fuzz targets check; built for unit tests (the corpus replay) and for
/// `fuzz/`, which turns the feature on, never into the operator's binary.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod heap;
pub mod leader;
#[cfg(test)]
mod manifest_pins;
pub mod metrics;
pub mod migrate;
pub mod model;
pub mod notify;
pub mod policy;
pub mod readiness;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod template;
#[cfg(test)]
mod test_client;
pub mod text;
pub mod time;
pub mod verdict;
pub mod wiring;
