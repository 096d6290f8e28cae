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
pub mod tls;
pub mod validate;

/// At most `max` bytes of `s` (cut on a character boundary, `…` appended): messages that
/// echo input must stay small whatever the input was.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod handler_tests;
