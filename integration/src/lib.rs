//! Test infrastructure for cyberdesk-operator: a real kube-apiserver + etcd launcher, a
//! kubectl runner and the KubeVirt simulator.

pub mod controlplane;
pub mod e2e;
pub mod harness;
pub mod kubectl;
pub mod kubevirt;
pub mod operator;
pub mod shared;
