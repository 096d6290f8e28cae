//! The control plane's own certificate authority: serving cert for the apiserver, the admin
//! and operator client identities and the service-account signing key. Also issues serving certs for test
//! webhook servers so the apiserver trusts them through `caBundle`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// The group the apiserver gives every authenticated request.
const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// organizationName (2.5.4.10): the attribute the apiserver reads groups from.
const ORGANIZATION_OID: [u64; 4] = [2, 5, 4, 10];

/// Why a client certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error(transparent)]
    Rcgen(#[from] rcgen::Error),
    #[error(
        "a test client certificate carries at most two groups besides system:authenticated \
         (rcgen writes one value per attribute type); got {0}"
    )]
    TooManyGroups(String),
}

/// A PEM certificate with its PEM private key.
#[derive(Clone, Debug)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A small CA that lives as long as one control plane.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // Back-date a little so a skewed clock between processes never rejects a fresh cert.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

impl TestCa {
    pub fn new(common_name: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, 7);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A serving certificate; `sans` may mix DNS names and IP addresses.
    pub fn issue_server(&self, common_name: &str, sans: &[&str]) -> Result<PemPair, rcgen::Error> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 7);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client identity: CN is the user name, O entries are the groups (as the apiserver
    /// reads them). `system:authenticated` is left out of the certificate: the apiserver
    /// adds it to every authenticated user itself. rcgen keeps one value per attribute
    /// type, so the second group is written as the same O attribute under its raw OID, and
    /// a third is refused rather than silently dropped.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<PemPair, ClientCertError> {
        let groups: Vec<&str> = groups
            .iter()
            .copied()
            .filter(|g| *g != AUTHENTICATED_GROUP)
            .collect();
        let slots = [
            DnType::OrganizationName,
            DnType::CustomDnType(ORGANIZATION_OID.to_vec()),
        ];
        if groups.len() > slots.len() {
            return Err(ClientCertError::TooManyGroups(groups.join(", ")));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, user);
        for (slot, group) in slots.into_iter().zip(groups) {
            params.distinguished_name.push(slot, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, 7);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// An ECDSA P-256 key pair for service-account tokens: (PKCS#8 private PEM, public PEM).
pub fn service_account_key() -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
