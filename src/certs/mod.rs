//! Certificates the apiserver trusts our webhooks by. Self-managed mode keeps an rcgen CA
//! and a serving leaf in the TLS Secret, the one source of truth all replicas read, and
//! rotates the leaf well before it expires (when a third of its lifetime is left, as
//! cert-manager does). Files mode serves mounted files instead (see [`files`]).
//!
//! `ca.crt` in the Secret is a trust bundle: the current CA first, then, after a CA
//! regeneration and until the next leaf rotation, the previous CA (if still valid), so
//! replicas still serving a leaf of the old CA stay trusted until they pick up the new one.

pub mod files;
pub mod rotation;
pub mod store;
pub mod tls;
pub mod trust;
pub mod webhook_config;

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tracing::warn;

use crate::certs::tls::{CertInfo, TlsError};

pub use files::{CertFiles, DEFAULT_POLL_INTERVAL, PollOutcome, load_files, run_files};
pub use rotation::{
    DEFAULT_CA_SETTLE, DEFAULT_CHECK_INTERVAL, PublishedReader, SelfManaged, SelfManagedConfig,
    Tick, run_self_managed,
};
pub use store::{
    Ensured, KubeSecretStore, SecretStore, WriteError, ensure_secret_in, ensure_trusted,
};
#[cfg(test)]
use store::{WRITE_ATTEMPTS, new_secret, updated_secret};

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

const CA_COMMON_NAME: &str = "cyberdesk-operator webhook CA";
const ORGANIZATION: &str = "cyberdesk.io";

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

/// Why a Secret's contents cannot be used as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Missing,
    CaUnreadable,
    CaKeyMismatch,
    CaExpiring,
    LeafUnreadable,
    LeafKeyMismatch,
    LeafExpiring,
    SansChanged,
    LeafNotIssuedByCa,
    UntrustedCa,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Missing => "secret missing",
            Reason::CaUnreadable => "CA certificate or key missing or unreadable",
            Reason::CaKeyMismatch => "CA key does not match the CA certificate",
            Reason::CaExpiring => "CA expires soon",
            Reason::LeafUnreadable => "serving certificate or key missing or unreadable",
            Reason::LeafKeyMismatch => "serving key does not match the serving certificate",
            Reason::LeafExpiring => "serving certificate expires soon",
            Reason::SansChanged => "serving certificate lacks a wanted DNS name or IP",
            Reason::LeafNotIssuedByCa => "serving certificate was not issued by the CA",
            Reason::UntrustedCa => "ca.crt held certificates the operator did not issue",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with the Secret's current contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    UseAsIs,
    /// Keep the CA, issue a new leaf.
    RotateLeaf {
        reason: Reason,
    },
    /// New CA and leaf. `previous_ca`: the old CA (PEM), still valid, to keep trusted.
    Regenerate {
        reason: Reason,
        previous_ca: Option<String>,
    },
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Less than `fraction` of the lifetime left (or already expired).
fn expiring(info: &CertInfo, now: SystemTime, fraction: f64) -> bool {
    let now = unix(now);
    let lifetime = info.not_after.saturating_sub(info.not_before).max(0);
    let remaining = info.not_after.saturating_sub(now);
    remaining <= 0 || (remaining as f64) < (lifetime as f64) * fraction
}

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
fn verify_leaf(
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

/// The pure heart of self-managed mode: what the Secret's contents call for.
pub fn decide(
    existing: Option<&SecretData>,
    sans: &[String],
    now: SystemTime,
    opts: &CertOptions,
) -> Action {
    let Some(data) = existing else {
        return Action::Regenerate {
            reason: Reason::Missing,
            previous_ca: None,
        };
    };
    if let Err(reason) = check_ca(data, now, opts) {
        return Action::Regenerate {
            reason,
            previous_ca: still_valid_ca(data, now),
        };
    }
    match check_leaf(data, sans, now, opts) {
        Ok(()) => Action::UseAsIs,
        Err(reason) => Action::RotateLeaf { reason },
    }
}

fn check_ca(data: &SecretData, now: SystemTime, opts: &CertOptions) -> Result<(), Reason> {
    let (Some(ca_pem), Some(ca_key)) = (&data.ca_cert_pem, &data.ca_key_pem) else {
        return Err(Reason::CaUnreadable);
    };
    let info = CertInfo::from_pem(ca_pem).map_err(|_| Reason::CaUnreadable)?;
    match tls::certified_key_from_pem(ca_pem, ca_key) {
        Ok(_) => {}
        Err(TlsError::KeyMismatch) => return Err(Reason::CaKeyMismatch),
        Err(_) => return Err(Reason::CaUnreadable),
    }
    if expiring(&info, now, opts.renew_fraction) {
        return Err(Reason::CaExpiring);
    }
    Ok(())
}

fn check_leaf(
    data: &SecretData,
    sans: &[String],
    now: SystemTime,
    opts: &CertOptions,
) -> Result<(), Reason> {
    let (Some(ca_pem), Some(cert_pem), Some(key_pem)) =
        (&data.ca_cert_pem, &data.cert_pem, &data.key_pem)
    else {
        return Err(Reason::LeafUnreadable);
    };
    let certified = match tls::certified_key_from_pem(cert_pem, key_pem) {
        Ok(c) => c,
        Err(TlsError::KeyMismatch) => return Err(Reason::LeafKeyMismatch),
        Err(_) => return Err(Reason::LeafUnreadable),
    };
    let leaf = certified
        .end_entity_cert()
        .map_err(|_| Reason::LeafUnreadable)?;
    let info = CertInfo::from_der(leaf).map_err(|_| Reason::LeafUnreadable)?;
    if !sans.iter().all(|s| info.covers(s)) {
        return Err(Reason::SansChanged);
    }
    if expiring(&info, now, opts.renew_fraction) {
        return Err(Reason::LeafExpiring);
    }
    let Some(first) = sans.first() else {
        return Ok(());
    };
    verify_leaf(ca_pem, leaf, first, now).map_err(|_| Reason::LeafNotIssuedByCa)
}

/// The current CA of a bundle, re-encoded alone, if it has not expired yet.
fn still_valid_ca(data: &SecretData, now: SystemTime) -> Option<String> {
    let certs = tls::certs_from_pem(data.ca_cert_pem.as_deref()?).ok()?;
    let first = certs.first()?;
    let info = CertInfo::from_der(first).ok()?;
    (info.not_after > unix(now)).then(|| der_to_pem(first))
}

fn der_to_pem(der: &[u8]) -> String {
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

/// The bundle without the previous CA. Dropped at the first leaf rotation after a CA
/// change: by then every replica serves a leaf of the new CA, and trust in a CA whose key
/// we no longer hold should not linger. A one-CA bundle comes back untouched, so an
/// unchanged bundle never looks like a new CA.
fn current_ca_only(bundle_pem: &str) -> String {
    match tls::certs_from_pem(bundle_pem) {
        Ok(certs) if certs.len() > 1 => certs
            .first()
            .map(|c| der_to_pem(c))
            .unwrap_or_else(|| bundle_pem.to_string()),
        _ => bundle_pem.to_string(),
    }
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

fn generate_ca_at(now: SystemTime, opts: &CertOptions) -> Result<(String, String), CertError> {
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

fn issue_serving_at(
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

/// New contents for the Secret, as `action` asks. `UseAsIs` returns the existing bundle.
pub fn apply_action(
    existing: Option<&SecretData>,
    action: &Action,
    sans: &[String],
    now: SystemTime,
    opts: &CertOptions,
) -> Result<CertBundle, CertError> {
    let regenerate = |previous_ca: Option<&str>| -> Result<CertBundle, CertError> {
        let (ca_cert, ca_key) = generate_ca_at(now, opts)?;
        let (cert_pem, key_pem) = issue_serving_at(&ca_cert, &ca_key, sans, now, opts)?;
        let ca_cert_pem = match previous_ca {
            Some(previous) => format!("{ca_cert}{previous}"),
            None => ca_cert,
        };
        Ok(CertBundle {
            ca_cert_pem,
            ca_key_pem: ca_key,
            cert_pem,
            key_pem,
        })
    };
    match (action, existing) {
        (Action::UseAsIs, Some(data)) => match data.bundle() {
            Some(bundle) => Ok(bundle),
            None => regenerate(None),
        },
        (Action::RotateLeaf { .. }, Some(data)) => {
            let (Some(ca_cert), Some(ca_key)) = (&data.ca_cert_pem, &data.ca_key_pem) else {
                return regenerate(None);
            };
            match issue_serving_at(ca_cert, ca_key, sans, now, opts) {
                Ok((cert_pem, key_pem)) => Ok(CertBundle {
                    ca_cert_pem: current_ca_only(ca_cert),
                    ca_key_pem: ca_key.clone(),
                    cert_pem,
                    key_pem,
                }),
                // The CA looked usable but cannot issue (foreign CA, odd key type): replace it.
                Err(
                    e @ (CertError::CaMismatch(_)
                    | CertError::Generate { .. }
                    | CertError::CaExpired),
                ) => {
                    warn!(error = %e, "cannot issue from the existing CA; generating a new CA");
                    regenerate(still_valid_ca(data, now).as_deref())
                }
                Err(e) => Err(e),
            }
        }
        (Action::Regenerate { previous_ca, .. }, _) => regenerate(previous_ca.as_deref()),
        (_, None) => regenerate(None),
    }
}

/// `cyberdesk-operator certs --out DIR`: a CA and serving leaf for local runs and the
/// files mode. Keys are written owner-only.
pub fn write_local_certs(dir: &Path, sans: &[String]) -> Result<Vec<PathBuf>, CertError> {
    let opts = CertOptions::default();
    let now = SystemTime::now();
    let (ca_cert, ca_key) = generate_ca_at(now, &opts)?;
    let (cert, key) = issue_serving_at(&ca_cert, &ca_key, sans, now, &opts)?;
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (file, contents, private) in [
        (KEY_CA_CERT, &ca_cert, false),
        (KEY_CA_KEY, &ca_key, true),
        (KEY_TLS_CERT, &cert, false),
        (KEY_TLS_KEY, &key, true),
    ] {
        let path = dir.join(file);
        write_file(&path, contents.as_bytes(), private).map_err(|source| CertError::Io {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, contents: &[u8], private: bool) -> std::io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = if private { 0o600 } else { 0o644 };
        options.mode(mode);
        let file = options.open(path)?;
        // `mode` only applies to new files; tighten one that was already there.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        write_all(file, contents)
    }
    #[cfg(not(unix))]
    {
        let _ = private;
        write_all(options.open(path)?, contents)
    }
}

fn write_all(mut file: std::fs::File, contents: &[u8]) -> std::io::Result<()> {
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
pub(crate) mod tests;
