//! Which CA certificates the operator trusts from its own Secret. Whatever `ca.crt` holds is
//! published as the webhooks' `caBundle`, so a certificate appended to it by anyone who can
//! write that Secret would be trusted by the apiserver. Only CAs the operator made count:
//! the Secret records their SHA-256 fingerprints (annotation [`ANNOTATION_ISSUED_CAS`]),
//! and the CA matching `ca.key` is ours by construction (which also covers a Secret written
//! before the annotation existed). Anything else is dropped.

use k8s_openapi::api::core::v1::Secret;

use crate::certs::tls;

/// Comma-separated SHA-256 fingerprints (hex) of the CA certificates the operator issued.
pub const ANNOTATION_ISSUED_CAS: &str = "cyberdesk.io/issued-ca-fingerprints";

/// SHA-256 of a DER certificate, lower-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The fingerprints recorded on the Secret.
pub fn recorded(secret: &Secret) -> Vec<String> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ISSUED_CAS))
        .map(|v| {
            v.split(',')
                .map(|f| f.trim().to_ascii_lowercase())
                .filter(|f| !f.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Fingerprints of every certificate in a PEM bundle (the value to record).
pub fn bundle_fingerprints(bundle_pem: &str) -> String {
    tls::certs_from_pem(bundle_pem)
        .map(|certs| {
            certs
                .iter()
                .map(|c| fingerprint(c))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A CA bundle with the certificates the operator did not issue taken out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Screened {
    /// The trusted certificates, re-encoded, in their original order; empty when none is.
    pub bundle_pem: String,
    /// Fingerprints of what was dropped.
    pub dropped: Vec<String>,
}

/// Keeps the certificates of `bundle_pem` whose fingerprint is in `issued` or whose key is
/// `ca_key_pem`. An unreadable bundle keeps nothing (a new CA follows).
pub fn screen(bundle_pem: &str, ca_key_pem: Option<&str>, issued: &[String]) -> Screened {
    let Ok(certs) = tls::certs_from_pem(bundle_pem) else {
        return Screened {
            bundle_pem: String::new(),
            dropped: vec!["(unreadable ca.crt)".into()],
        };
    };
    let mut kept = String::new();
    let mut dropped = Vec::new();
    for cert in certs {
        let fp = fingerprint(&cert);
        let pem = super::der_to_pem(&cert);
        let matches_key =
            ca_key_pem.is_some_and(|key| tls::certified_key_from_pem(&pem, key).is_ok());
        if matches_key || issued.contains(&fp) {
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
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::certs::{CertOptions, generate_ca_at};

    fn ca() -> (String, String) {
        generate_ca_at(SystemTime::now(), &CertOptions::default()).expect("CA")
    }

    #[test]
    fn the_ca_of_the_key_and_recorded_cas_stay_and_strangers_go() {
        let (current, key) = ca();
        let (previous, _) = ca();
        let (stranger, _) = ca();
        let recorded = vec![fingerprint(
            &tls::certs_from_pem(&previous).expect("pem")[0],
        )];
        let bundle = format!("{current}{previous}{stranger}");
        let screened = screen(&bundle, Some(&key), &recorded);
        assert_eq!(screened.bundle_pem, format!("{current}{previous}"));
        assert_eq!(
            screened.dropped,
            vec![fingerprint(
                &tls::certs_from_pem(&stranger).expect("pem")[0]
            )]
        );
        // Nothing recorded (a Secret from before the annotation): the key's CA alone.
        let screened = screen(&bundle, Some(&key), &[]);
        assert_eq!(screened.bundle_pem, current);
        assert_eq!(screened.dropped.len(), 2);
    }

    #[test]
    fn garbage_keeps_nothing() {
        let screened = screen("not a certificate", None, &[]);
        assert!(screened.bundle_pem.is_empty());
        assert_eq!(screened.dropped.len(), 1);
    }

    #[test]
    fn recorded_fingerprints_round_trip() {
        let (a, _) = ca();
        let (b, _) = ca();
        let mut secret = Secret::default();
        secret.metadata.annotations = Some(
            [(
                ANNOTATION_ISSUED_CAS.to_string(),
                bundle_fingerprints(&format!("{a}{b}")).to_uppercase(),
            )]
            .into(),
        );
        let got = recorded(&secret);
        assert_eq!(got.len(), 2);
        assert_eq!(
            screen(&format!("{a}{b}"), None, &got).dropped,
            Vec::<String>::new()
        );
    }
}
