//! Admission webhooks: the HTTPS server, review handling, defaulting, validation, JSON
//! Schema policies, and the certificates the apiserver trusts them by.

// pub mod admission; (enabled once policy::PolicyStore lands)
pub mod certs;
pub mod configuration;
pub mod mutate;
pub mod policy;
// pub mod server; (needs admission)
pub mod tls;
pub mod validate;
