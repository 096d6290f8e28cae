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
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    fn unix(t: SystemTime) -> i64 {
        t.duration_since(UNIX_EPOCH).expect("after epoch").as_secs() as i64
    }

    fn self_signed(params: &CertificateParams) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        for (year, month, day) in [
            (1999, 12, 31),
            (2030, 2, 28),
            (2049, 12, 31),
            (2050, 1, 1),
            (2400, 2, 29),
        ] {
            let mut params = CertificateParams::new(vec!["a.example".to_string()]).expect("params");
            params.not_before = date_time_ymd(1999, 1, 1);
            params.not_after = date_time_ymd(year, month, day);
            let (pem, _) = self_signed(&params);
            let info = CertInfo::from_pem(&pem).expect("parse");
            assert_eq!(
                info.not_after,
                unix(params.not_after.into()),
                "{year}-{month}-{day}"
            );
            assert_eq!(info.not_before, unix(params.not_before.into()));
            assert_eq!(cert_not_after(&pem).expect("not after"), info.not_after);
        }
    }

    #[test]
    fn reads_dns_and_ip_sans() {
        let sans = ["svc.ns.svc", "Svc", "127.0.0.1", "::1"]
            .map(String::from)
            .to_vec();
        let (pem, _) = self_signed(&CertificateParams::new(sans).expect("params"));
        let info = CertInfo::from_pem(&pem).expect("parse");
        assert_eq!(info.dns_names, vec!["svc.ns.svc", "Svc"]);
        assert_eq!(info.ip_addresses.len(), 2);
        assert!(info.covers("svc.ns.svc"));
        assert!(info.covers("SVC.ns.svc."));
        assert!(info.covers("svc"));
        assert!(info.covers("0:0:0:0:0:0:0:1"));
        assert!(info.covers("127.0.0.1"));
        assert!(!info.covers("127.0.0.2"));
        assert!(!info.covers("other.ns.svc"));
    }

    #[test]
    fn broken_der_is_an_error_not_a_panic() {
        let (pem, _) = self_signed(&CertificateParams::new(vec!["a".to_string()]).expect("params"));
        let der = certs_from_pem(&pem).expect("certs").remove(0);
        for cut in [0, 1, 2, 10, der.len() / 2, der.len() - 1] {
            assert!(CertInfo::from_der(&der[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = der.to_vec();
        trailing.push(0);
        assert!(CertInfo::from_der(&trailing).is_err());
        assert!(CertInfo::from_der(&[0x30, 0x80, 0, 0]).is_err());
        assert!(CertInfo::from_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(CertInfo::from_der(&[0xFF; 64]).is_err());
    }

    #[test]
    fn pem_errors_are_named() {
        let (cert, key) =
            self_signed(&CertificateParams::new(vec!["a".to_string()]).expect("params"));
        let (_, other_key) =
            self_signed(&CertificateParams::new(vec!["b".to_string()]).expect("params"));
        assert!(certified_key_from_pem(&cert, &key).is_ok());
        assert!(matches!(
            certified_key_from_pem("", &key),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            certified_key_from_pem(&key, &key),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            certified_key_from_pem(&cert, ""),
            Err(TlsError::NoPrivateKey)
        ));
        assert!(matches!(
            certified_key_from_pem(&cert, &cert),
            Err(TlsError::NoPrivateKey)
        ));
        assert!(matches!(
            certified_key_from_pem(&cert, &other_key),
            Err(TlsError::KeyMismatch)
        ));
        let truncated = &cert[..cert.len() - 30];
        assert!(matches!(
            certified_key_from_pem(truncated, &key),
            Err(TlsError::MalformedCertificatePem(_))
        ));
        let garbled = key.replacen("MI", "!!", 1);
        let err = certified_key_from_pem(&cert, &garbled).expect_err("garbled key");
        assert!(matches!(err, TlsError::MalformedKeyPem), "{err:?}");
        assert!(!err.to_string().contains("!!"));
    }

    #[test]
    fn resolver_starts_empty_and_swaps() {
        let resolver = CertResolver::new();
        assert!(!resolver.is_loaded());
        assert!(resolver.current().is_none());
        let (cert, key) =
            self_signed(&CertificateParams::new(vec!["a".to_string()]).expect("params"));
        let ck = Arc::new(certified_key_from_pem(&cert, &key).expect("pair"));
        assert!(resolver.swap(ck.clone()).is_none());
        assert!(resolver.is_loaded());
        assert!(resolver.swap(ck).is_some());
        assert_eq!(format!("{resolver:?}"), "CertResolver { loaded: true }");
    }

    #[test]
    fn server_config_speaks_http1_only() {
        let config = server_config(Arc::new(CertResolver::new())).expect("config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
