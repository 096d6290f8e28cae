//! Which CA certificates the operator trusts from its own Secret. Whatever `ca.crt` holds is
//! published as the webhooks' `caBundle`, so a certificate put there by anyone who can
//! write that Secret would be trusted by the apiserver. The trust anchor therefore lives
//! outside the Secret: a CA counts only if this process issued or published it before, or
//! the webhook configurations already publish it (the apiserver trusts those anyway).
//! Nothing stored beside the key (a fingerprint list, a matching key) can vouch for a CA,
//! since whoever forges the CA can forge those too.
//!
//! Two cases fall back to the CA that matches `ca.key`: the first start of an install (no
//! caBundle published, nothing pinned yet: trust on first use) and an install whose webhook
//! configurations the operator does not manage (it publishes nothing, so nothing is gained
//! by forging the Secret but an outage).

use std::collections::BTreeSet;

use crate::certs::tls;

/// Marks an unreadable `ca.crt` in [`Screened::dropped`].
pub const UNREADABLE: &str = "(unreadable ca.crt)";

/// SHA-256 of a DER certificate, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Fingerprints of every readable certificate in a PEM bundle; garbage yields none.
pub fn fingerprints(bundle_pem: &str) -> BTreeSet<String> {
    tls::certs_from_pem(bundle_pem)
        .map(|certs| certs.iter().map(|c| fingerprint(c)).collect())
        .unwrap_or_default()
}

/// What a check of `ca.crt` may trust.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anchors {
    /// Fingerprints of CAs this process issued or published, and of those the webhook
    /// configurations publish now.
    pub trusted: BTreeSet<String>,
    /// Whether the CA matching `ca.key` is trusted without an anchor (see the module doc).
    pub key_ca: bool,
}

impl Anchors {
    /// `pinned`: what this process issued or published; `published`: what the webhook
    /// configurations hold now, or `None` when the operator does not manage them.
    pub fn new(pinned: &BTreeSet<String>, published: Option<&BTreeSet<String>>) -> Self {
        let key_ca = match published {
            None => true,
            Some(p) => p.is_empty() && pinned.is_empty(),
        };
        let mut trusted = pinned.clone();
        trusted.extend(published.into_iter().flatten().cloned());
        Self { trusted, key_ca }
    }
}

/// A CA bundle with the certificates no anchor vouches for taken out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screened {
    /// The trusted certificates, re-encoded, in their original order; empty when none is.
    pub bundle_pem: String,
    /// Fingerprints of what was dropped ([`UNREADABLE`] for a bundle that does not parse).
    pub dropped: Vec<String>,
}

/// Keeps the certificates of `bundle_pem` that `anchors` trusts. An unreadable bundle
/// keeps nothing (a new CA follows).
pub fn screen(bundle_pem: &str, ca_key_pem: Option<&str>, anchors: &Anchors) -> Screened {
    let Ok(certs) = tls::certs_from_pem(bundle_pem) else {
        return Screened {
            bundle_pem: String::new(),
            dropped: vec![UNREADABLE.into()],
        };
    };
    let mut kept = String::new();
    let mut dropped = Vec::new();
    for cert in certs {
        let fp = fingerprint(&cert);
        let pem = crate::certs::bundle::der_to_pem(&cert);
        let of_the_key = anchors.key_ca
            && ca_key_pem.is_some_and(|key| tls::certified_key_from_pem(&pem, key).is_ok());
        if of_the_key || anchors.trusted.contains(&fp) {
            kept.push_str(&pem);
        } else {
            dropped.push(fp);
        }
    }
    Screened {
        bundle_pem: kept,
        dropped,
    }
}

#[cfg(test)]
mod tests;
