//! Certificates the apiserver trusts our webhooks by. Self-managed mode keeps an rcgen CA
//! and a serving leaf in the TLS Secret, the one source of truth all replicas read, and
//! rotates the leaf well before it expires (when a third of its lifetime is left, as
//! cert-manager does). Files mode serves mounted files instead (see [`files`]).
//!
//! `ca.crt` in the Secret is a trust bundle: the current CA first, then, after a CA
//! regeneration and until the next leaf rotation, the previous CA (if still valid), so
//! replicas still serving a leaf of the old CA stay trusted until they pick up the new one.

pub mod bundle;
pub mod decision;
pub mod files;
pub mod issue;
pub mod local;
pub mod rotation;
pub mod store;
pub mod tls;
pub mod trust;
pub mod webhook_config;

pub use bundle::{
    CertBundle, CertError, CertOptions, DEFAULT_BACKDATE, DEFAULT_CA_VALIDITY,
    DEFAULT_LEAF_VALIDITY, DEFAULT_RENEW_FRACTION, KEY_CA_CERT, KEY_CA_KEY, KEY_TLS_CERT,
    KEY_TLS_KEY, SECRET_TYPE_TLS, SecretData,
};
pub use decision::{Action, Reason, apply_action, decide};
pub use files::{CertFiles, DEFAULT_POLL_INTERVAL, PollOutcome, load_files, run_files};
pub use issue::{generate_ca, issue_serving, validate_sans};
pub use local::write_local_certs;
pub use rotation::{
    DEFAULT_CA_SETTLE, DEFAULT_CHECK_INTERVAL, PublishedReader, SelfManaged, SelfManagedConfig,
    Tick, run_self_managed,
};
pub use store::{
    Ensured, KubeSecretStore, SecretStore, WriteError, ensure_secret_in, ensure_trusted,
};
#[cfg(test)]
use store::{WRITE_ATTEMPTS, new_secret, updated_secret};
#[cfg(test)]
use {
    bundle::{der_to_pem, unix},
    issue::generate_ca_at,
};

#[cfg(test)]
pub(crate) mod tests;
