//! Test infrastructure for cyberdesk-operator: a real kube-apiserver + etcd launcher, a
//! kubectl runner and the KubeVirt simulator, and the helpers end-to-end tests share.
//!
//! - [`audit`]: counting requests by user in the apiserver's audit log;
//! - [`cluster`]: the shared control plane, namespaces, installing the shipped manifests;
//! - [`operator`]: the operator as a child process (ServiceAccount, RBAC, webhooks);
//! - [`lease`]: the leader-election Lease's holder and transitions;
//! - [`overlay`]: a shipped kustomize overlay: its render, RBAC and operator flags;
//! - [`pools`]: warm-pool YAML, waits and the ownership audit pool tests share;
//! - [`recorder`]: an HTTP server standing in for the platform's endpoints;
//! - [`soak`]: the chaos soak: replicas, workload, faults and an independent checker;
//! - [`desks`]: typed desk APIs, desk YAML, events and times as a user sees them;
//! - [`layers`]: the shape check: layers, import circles and sizes of the operator's code;
//! - [`image`]: the operator's image under podman, run as the shipped Deployment runs it;
//! - [`wait`]: the one poller every wait is built on;
//! - [`webhook_tls`]: handshakes with the webhook port as the apiserver does;
//! - [`workspace`]: the operator binary and the repository's files.

pub mod audit;
pub mod cluster;
pub mod controlplane;
pub mod desks;
pub mod docs;
pub mod image;
pub mod kubectl;
pub mod kubevirt;
pub mod layers;
pub mod lease;
pub mod operator;
pub mod overlay;
pub mod pools;
pub mod ports;
pub mod recorder;
pub mod soak;
pub mod wait;
pub mod webhook_tls;
pub mod workspace;
