//! Issuing: a new self-signed CA, and serving leaves it signs, each checked as the
//! apiserver would check it before it is used.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::certs::bundle::{CertError, CertOptions, unix};
use crate::certs::tls::{self, CertInfo};

const CA_COMMON_NAME: &str = "cyberdesk-operator webhook CA";
const ORGANIZATION: &str = "cyberdesk.io";

/// A name rustls can verify the leaf for: wildcards are checked through one of their names.
fn verification_name(san: &str) -> Option<ServerName<'static>> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Some(ServerName::IpAddress(ip.into()));
    }
    let name = match san.strip_prefix("*.") {
        Some(rest) => format!("wildcard-check.{rest}"),
        None => san.to_string(),
    };
    ServerName::try_from(name).ok()
}

/// Refuses an empty list or a name no certificate could carry, before anything is generated.
pub fn validate_sans(sans: &[String]) -> Result<(), CertError> {
    if sans.is_empty() {
        return Err(CertError::NoSans);
    }
    for san in sans {
        if verification_name(san).is_none() {
            return Err(CertError::InvalidSan(san.clone()));
        }
    }
    Ok(())
}

/// Checks, as the apiserver would, that `leaf` chains to the first certificate of `ca_pem`
/// and is valid for `san` at `now`.
pub(crate) fn verify_leaf(
    ca_pem: &str,
    leaf: &CertificateDer<'_>,
    san: &str,
    now: SystemTime,
) -> Result<(), rustls::Error> {
    let ca = tls::certs_from_pem(ca_pem)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let name = verification_name(san)
        .ok_or_else(|| rustls::Error::General(format!("invalid name {san}")))?;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    verifier.verify_server_cert(
        leaf,
        &[],
        &name,
        &[],
        UnixTime::since_unix_epoch(since_epoch),
    )?;
    Ok(())
}

fn new_key() -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| CertError::Generate {
        what: "key pair",
        source,
    })
}

/// The CA's name and key usages. Leaves are issued through an `Issuer` rebuilt from these
/// (rcgen needs x509-parser to read them back from a certificate), so they must never
/// change; `issue_serving_at` verifies the result, and a CA that does not fit is replaced.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    // Path length 0: this CA signs serving certificates, never other CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A new self-signed ECDSA P-256 CA: (certificate PEM, key PEM).
pub fn generate_ca(validity: Duration) -> Result<(String, String), CertError> {
    let opts = CertOptions {
        ca_validity: validity,
        ..CertOptions::default()
    };
    generate_ca_at(SystemTime::now(), &opts)
}

pub(crate) fn generate_ca_at(
    now: SystemTime,
    opts: &CertOptions,
) -> Result<(String, String), CertError> {
    let key = new_key()?;
    let mut params = ca_params();
    params.not_before = now.checked_sub(opts.backdate).unwrap_or(now).into();
    params.not_after = (now + opts.ca_validity).into();
    let cert = params
        .self_signed(&key)
        .map_err(|source| CertError::Generate {
            what: "CA certificate",
            source,
        })?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving leaf for `sans` (DNS names and IPs), signed by the first CA of `ca_cert_pem`:
/// (certificate PEM, key PEM). It never outlives the CA.
pub fn issue_serving(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
    validity: Duration,
) -> Result<(String, String), CertError> {
    let opts = CertOptions {
        leaf_validity: validity,
        ..CertOptions::default()
    };
    issue_serving_at(ca_cert_pem, ca_key_pem, sans, SystemTime::now(), &opts)
}

pub(crate) fn issue_serving_at(
    ca_cert_pem: &str,
    ca_key_pem: &str,
    sans: &[String],
    now: SystemTime,
    opts: &CertOptions,
) -> Result<(String, String), CertError> {
    validate_sans(sans)?;
    let Some(first_san) = sans.first() else {
        return Err(CertError::NoSans);
    };
    let ca_info = CertInfo::from_pem(ca_cert_pem)?;
    if ca_info.not_after <= unix(now) {
        return Err(CertError::CaExpired);
    }
    let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|source| CertError::Generate {
        what: "CA key (from PEM)",
        source,
    })?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let mut params =
        CertificateParams::new(sans.to_vec()).map_err(|_| CertError::InvalidSan(sans.join(",")))?;
    let mut dn = DistinguishedName::new();
    let common_name = sans
        .iter()
        .find(|s| s.parse::<IpAddr>().is_err())
        .unwrap_or(first_san);
    dn.push(DnType::CommonName, common_name.as_str());
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now.checked_sub(opts.backdate).unwrap_or(now).into();
    let wanted_end = unix(now + opts.leaf_validity);
    let end = UNIX_EPOCH
        + Duration::from_secs(u64::try_from(wanted_end.min(ca_info.not_after)).unwrap_or(0));
    params.not_after = end.into();

    let key = new_key()?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| CertError::Generate {
            what: "serving certificate",
            source,
        })?;
    verify_leaf(ca_cert_pem, cert.der(), first_san, now).map_err(CertError::CaMismatch)?;
    Ok((cert.pem(), key.serialize_pem()))
}
