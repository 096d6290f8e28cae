//! Admission webhooks: the HTTPS server, review handling, defaulting, validation, JSON
//! Schema policies, and the certificates the apiserver trusts them by.

pub mod admission;
pub mod authz;
pub mod certs;
pub mod configuration;
pub mod mutate;
pub mod policy;
pub mod policy_watch;
pub mod server;
pub mod tenancy;
pub mod text;
pub mod tls;
pub mod validate;
pub mod verdict;

#[cfg(test)]
mod handler_tests;
