//! What the TLS Secret holds and the certificate options: the Secret's keys, the CA and
//! serving leaf as PEM, lifetimes, and the errors of issuing and loading them.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;

use crate::certs::tls::TlsError;

pub const KEY_CA_CERT: &str = "ca.crt";
pub const KEY_CA_KEY: &str = "ca.key";
pub const KEY_TLS_CERT: &str = "tls.crt";
pub const KEY_TLS_KEY: &str = "tls.key";
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";

pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(3_650 * 86_400);
pub const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(90 * 86_400);
/// Rotate when less than this fraction of a certificate's lifetime is left.
pub const DEFAULT_RENEW_FRACTION: f64 = 1.0 / 3.0;
/// notBefore lies this far in the past, so an apiserver whose clock runs a little behind
/// ours does not see a certificate from the future.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "no subject alternative names: the serving certificate needs at least one DNS name or IP address"
    )]
    NoSans,
    #[error("subject alternative name `{0}` is neither an IP address nor a valid DNS name")]
    InvalidSan(String),
    #[error("cannot generate the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("the CA certificate expired; a new CA is needed")]
    CaExpired,
    #[error(
        "a certificate issued by the CA does not verify against it ({0}); the CA certificate and key do not belong together or were not made by this operator"
    )]
    CaMismatch(rustls::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot {verb} Secret {namespace}/{name}: {source}")]
    Kube {
        verb: &'static str,
        namespace: String,
        name: String,
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {namespace}/{name} kept changing while we wrote it (another replica?): gave up after {attempts} attempts"
    )]
    Contention {
        namespace: String,
        name: String,
        attempts: u32,
    },
    #[error(
        "Secret {namespace}/{name} holds CA certificates that are neither published in the webhooks' caBundle nor issued by this process (SHA-256 {}); checking again before removing them",
        fingerprints.join(", ")
    )]
    UnverifiedCa {
        namespace: String,
        name: String,
        fingerprints: Vec<String>,
    },
    #[error("cannot read the caBundle the webhook configurations publish: {0}")]
    ReadPublished(String),
    #[error("cannot put the CA bundle into the webhook configurations: {0}")]
    PublishCa(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not UTF-8 text (PEM expected)", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("cannot load the serving certificate from {} and {}: {source}", cert.display(), key.display())]
    LoadFiles {
        cert: PathBuf,
        key: PathBuf,
        source: TlsError,
    },
}

/// Lifetimes and the rotation threshold; tests use short ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CertOptions {
    pub ca_validity: Duration,
    pub leaf_validity: Duration,
    /// Rotate a certificate (leaf or CA) once less than this fraction of its lifetime is left.
    pub renew_fraction: f64,
    pub backdate: Duration,
}

impl Default for CertOptions {
    fn default() -> Self {
        Self {
            ca_validity: DEFAULT_CA_VALIDITY,
            leaf_validity: DEFAULT_LEAF_VALIDITY,
            renew_fraction: DEFAULT_RENEW_FRACTION,
            backdate: DEFAULT_BACKDATE,
        }
    }
}

/// A CA and a serving leaf it signed, all PEM. `ca_cert_pem` may hold a previous CA after
/// the current one (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for CertBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &"<redacted>")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The four keys of the TLS Secret as found; any may be missing or not UTF-8 (then None).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretData {
    pub ca_cert_pem: Option<String>,
    pub ca_key_pem: Option<String>,
    pub cert_pem: Option<String>,
    pub key_pem: Option<String>,
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("SecretData")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .field("ca_key_pem", &redacted(&self.ca_key_pem))
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &redacted(&self.key_pem))
            .finish()
    }
}

impl SecretData {
    pub fn from_secret(secret: &Secret) -> Self {
        let get = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        Self {
            ca_cert_pem: get(KEY_CA_CERT),
            ca_key_pem: get(KEY_CA_KEY),
            cert_pem: get(KEY_TLS_CERT),
            key_pem: get(KEY_TLS_KEY),
        }
    }

    pub fn bundle(&self) -> Option<CertBundle> {
        Some(CertBundle {
            ca_cert_pem: self.ca_cert_pem.clone()?,
            ca_key_pem: self.ca_key_pem.clone()?,
            cert_pem: self.cert_pem.clone()?,
            key_pem: self.key_pem.clone()?,
        })
    }
}

impl From<&CertBundle> for SecretData {
    fn from(b: &CertBundle) -> Self {
        Self {
            ca_cert_pem: Some(b.ca_cert_pem.clone()),
            ca_key_pem: Some(b.ca_key_pem.clone()),
            cert_pem: Some(b.cert_pem.clone()),
            key_pem: Some(b.key_pem.clone()),
        }
    }
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}
