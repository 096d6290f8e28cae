//! The webhook server's TLS: a rustls config whose certificate comes from a resolver that
//! can be swapped at any time, so a rotated or re-mounted certificate is served without a
//! restart, plus the few X.509 facts rotation needs (read with `x509-parser`).

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The only ALPN protocol we offer.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no CERTIFICATE block found in the certificate PEM")]
    NoCertificate,
    #[error("the certificate PEM is malformed: {0}")]
    MalformedCertificatePem(String),
    #[error("no PRIVATE KEY block (PKCS#8, SEC1 or PKCS#1) found in the key PEM")]
    NoPrivateKey,
    /// Carries no detail on purpose: the parser's message may quote key bytes.
    #[error("the private key PEM is malformed")]
    MalformedKeyPem,
    #[error("the private key is not a supported type (RSA, ECDSA or Ed25519): {0}")]
    UnsupportedKey(rustls::Error),
    #[error("the private key does not match the certificate's public key")]
    KeyMismatch,
    #[error("the certificate cannot be used: {0}")]
    BadCertificate(rustls::Error),
    #[error("the certificate is not valid X.509 DER: {0}")]
    Der(String),
    #[error("cannot build the TLS server configuration: {0}")]
    Config(rustls::Error),
    #[error("cannot read the client CA file {path}: {error}")]
    ClientCaFile { path: String, error: String },
    #[error("cannot verify client certificates with the CAs of {path}: {error}")]
    ClientCa { path: String, error: String },
}

/// Serves whichever certificate was swapped in last, whatever the SNI: the apiserver
/// reaches us by Service DNS name or by IP, and both are in the one certificate.
#[derive(Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the served certificate; handshakes already under way keep the old one.
    /// Returns the previous certificate, if any.
    pub fn swap(&self, new: Arc<CertifiedKey>) -> Option<Arc<CertifiedKey>> {
        // A writer cannot panic half-way through replacing an Option, so a poisoned lock
        // still holds a consistent value.
        let mut guard = self.current.write().unwrap_or_else(PoisonError::into_inner);
        guard.replace(new)
    }

    /// True once a certificate has been loaded: until then every handshake is refused.
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl fmt::Debug for CertResolver {
    // Never print the signing key, not even its Debug form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

/// Every CERTIFICATE block of a PEM text, leaf first.
pub fn certs_from_pem(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::MalformedCertificatePem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    Ok(certs)
}

fn key_from_pem(key_pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey,
        _ => TlsError::MalformedKeyPem,
    })
}

/// A chain and key ready for the resolver, refused unless the key belongs to the leaf:
/// a mismatched pair would only fail later, inside every handshake.
pub fn certified_key_from_pem(
    cert_chain_pem: &str,
    key_pem: &str,
) -> Result<CertifiedKey, TlsError> {
    let chain = certs_from_pem(cert_chain_pem)?;
    let key = key_from_pem(key_pem)?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(TlsError::UnsupportedKey)?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // `Unknown`: the key type cannot report its public half; rustls accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
        Err(e) => Err(TlsError::BadCertificate(e)),
    }
}

/// TLS 1.2 and 1.3 with the ring provider, no client certificates, and the resolver's
/// certificate. ALPN offers only `http/1.1`: the apiserver's webhook client speaks it (or
/// h2), and staying on HTTP/1.1 keeps us out of the HTTP/2 rapid-reset class of attacks
/// on an endpoint every API write passes through.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<rustls::ServerConfig, TlsError> {
    server_config_for_clients(resolver, None)
}

/// The CAs whose client certificates the webhook server accepts, from a PEM file.
pub fn client_roots(path: &std::path::Path) -> Result<ClientRoots, TlsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| TlsError::ClientCaFile {
        path: shown.clone(),
        error: e.to_string(),
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs_from_pem(&text)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: shown.clone(),
            error: e.to_string(),
        })?;
    }
    Ok(ClientRoots {
        roots: Arc::new(roots),
        path: shown,
    })
}

/// CAs for client certificates, and the file they came from (for messages).
#[derive(Clone, Debug)]
pub struct ClientRoots {
    roots: Arc<rustls::RootCertStore>,
    path: String,
}

/// As [`server_config`]; with `clients`, every connection must present a client
/// certificate that chains to one of those CAs, or the handshake fails.
pub fn server_config_for_clients(
    resolver: Arc<CertResolver>,
    clients: Option<ClientRoots>,
) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                clients.roots,
                provider,
            )
            .build()
            .map_err(|e| TlsError::ClientCa {
                path: clients.path,
                error: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Unix time (seconds) at which the first certificate of a PEM text expires.
pub fn cert_not_after(cert_pem: &str) -> Result<i64, TlsError> {
    let certs = certs_from_pem(cert_pem)?;
    let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
    Ok(CertInfo::from_der(leaf)?.not_after)
}

/// What rotation decisions need from a certificate; rustls and webpki do not expose these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// dNSName entries of subjectAltName, as written.
    pub dns_names: Vec<String>,
    /// iPAddress entries of subjectAltName.
    pub ip_addresses: Vec<IpAddr>,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<Self, TlsError> {
        use x509_parser::extensions::GeneralName;

        let bad = |e: &dyn fmt::Display| TlsError::Der(e.to_string());
        let (rest, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(&e))?;
        if !rest.is_empty() {
            return Err(TlsError::Der("bytes after the certificate".into()));
        }
        let validity = cert.validity();
        let mut info = CertInfo {
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        };
        let sans = cert.subject_alternative_name().map_err(|e| bad(&e))?;
        for name in sans.iter().flat_map(|ext| &ext.value.general_names) {
            match name {
                GeneralName::DNSName(dns) => info.dns_names.push((*dns).to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).map(IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*bytes).map(IpAddr::from).ok(),
                        _ => None,
                    };
                    info.ip_addresses.push(ip.ok_or_else(|| {
                        TlsError::Der("an iPAddress SAN is neither 4 nor 16 bytes".into())
                    })?);
                }
                _ => {}
            }
        }
        Ok(info)
    }

    /// The first certificate of a PEM text.
    pub fn from_pem(cert_pem: &str) -> Result<Self, TlsError> {
        let certs = certs_from_pem(cert_pem)?;
        let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
        Self::from_der(leaf)
    }

    /// Whether `san` (a DNS name or an IP address, as given on the command line) is in
    /// the certificate. DNS names compare case-insensitively; IPs by value, so `::1` and
    /// `0:0:0:0:0:0:0:1` are the same.
    pub fn covers(&self, san: &str) -> bool {
        match san.parse::<IpAddr>() {
            Ok(ip) => self.ip_addresses.contains(&ip),
            Err(_) => {
                let wanted = san.trim_end_matches('.');
                self.dns_names
                    .iter()
                    .any(|have| have.trim_end_matches('.').eq_ignore_ascii_case(wanted))
            }
        }
    }
}

#[cfg(test)]
mod tests;
