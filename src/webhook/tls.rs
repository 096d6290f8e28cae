//! The webhook server's TLS: a rustls config whose certificate comes from a resolver that
//! can be swapped at any time, so a rotated or re-mounted certificate is served without a
//! restart (stackable-webhook's approach), plus the few X.509 facts we need to read.

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
    Der(&'static str),
    #[error("cannot build the TLS server configuration: {0}")]
    Config(rustls::Error),
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(config)
}

/// Unix time (seconds) at which the first certificate of a PEM text expires.
pub fn cert_not_after(cert_pem: &str) -> Result<i64, TlsError> {
    let certs = certs_from_pem(cert_pem)?;
    let leaf = certs.first().ok_or(TlsError::NoCertificate)?;
    Ok(CertInfo::from_der(leaf)?.not_after)
}

/// What rotation decisions need from a certificate; rustls/webpki do not expose these.
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
        der::parse_certificate(der).map_err(TlsError::Der)
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

/// A small, strict DER walker for the parts of an X.509 certificate we read: the validity
/// and the subjectAltName extension. Everything else is skipped by length.
mod der {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::CertInfo;

    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const OID: u8 = 0x06;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    const VERSION: u8 = 0xA0; // [0] EXPLICIT
    const ISSUER_UID: u8 = 0x81; // [1] IMPLICIT
    const SUBJECT_UID: u8 = 0x82; // [2] IMPLICIT
    const EXTENSIONS: u8 = 0xA3; // [3] EXPLICIT
    const GN_DNS_NAME: u8 = 0x82; // GeneralName dNSName [2] IMPLICIT IA5String
    const GN_IP_ADDRESS: u8 = 0x87; // GeneralName iPAddress [7] IMPLICIT OCTET STRING
    /// 2.5.29.17 id-ce-subjectAltName, content octets.
    const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1D, 0x11];

    pub(super) type Result<T> = std::result::Result<T, &'static str>;

    /// A cursor over a run of DER TLVs.
    pub(super) struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub(super) fn new(data: &'a [u8]) -> Self {
            Self { rest: data }
        }

        pub(super) fn is_empty(&self) -> bool {
            self.rest.is_empty()
        }

        pub(super) fn peek_tag(&self) -> Option<u8> {
            self.rest.first().copied()
        }

        /// The next TLV as (tag, contents).
        pub(super) fn read_any(&mut self) -> Result<(u8, &'a [u8])> {
            let (&tag, after_tag) = self.rest.split_first().ok_or("unexpected end of data")?;
            if tag & 0x1F == 0x1F {
                return Err("multi-byte tags are not used in certificates");
            }
            let (&first, after_len) = after_tag.split_first().ok_or("truncated length")?;
            let (len, after_len) = if first < 0x80 {
                (usize::from(first), after_len)
            } else {
                let n = usize::from(first & 0x7F);
                if n == 0 {
                    return Err("indefinite length is not DER");
                }
                if n > 4 {
                    return Err("length too large");
                }
                if after_len.len() < n {
                    return Err("truncated length");
                }
                let (len_bytes, after) = after_len.split_at(n);
                let len = len_bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                (len, after)
            };
            if after_len.len() < len {
                return Err("value runs past the end of its container");
            }
            let (contents, rest) = after_len.split_at(len);
            self.rest = rest;
            Ok((tag, contents))
        }

        pub(super) fn read(&mut self, expected: u8) -> Result<&'a [u8]> {
            match self.read_any()? {
                (tag, contents) if tag == expected => Ok(contents),
                _ => Err("unexpected element in certificate"),
            }
        }

        pub(super) fn skip_if(&mut self, tag: u8) -> Result<()> {
            if self.peek_tag() == Some(tag) {
                self.read_any()?;
            }
            Ok(())
        }
    }

    pub(super) fn parse_certificate(der: &[u8]) -> Result<CertInfo> {
        let mut outer = Reader::new(der);
        let certificate = outer.read(SEQUENCE)?;
        if !outer.is_empty() {
            return Err("trailing data after the certificate");
        }
        let tbs = Reader::new(certificate).read(SEQUENCE)?;
        let mut r = Reader::new(tbs);
        r.skip_if(VERSION)?;
        r.read(INTEGER)?; // serialNumber
        r.read(SEQUENCE)?; // signature AlgorithmIdentifier
        r.read(SEQUENCE)?; // issuer
        let mut validity = Reader::new(r.read(SEQUENCE)?);
        let not_before = read_time(&mut validity)?;
        let not_after = read_time(&mut validity)?;
        if !validity.is_empty() {
            return Err("validity has more than two times");
        }
        r.read(SEQUENCE)?; // subject
        r.read(SEQUENCE)?; // subjectPublicKeyInfo
        r.skip_if(ISSUER_UID)?;
        r.skip_if(SUBJECT_UID)?;
        let mut info = CertInfo {
            not_before,
            not_after,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        };
        if r.peek_tag() == Some(EXTENSIONS) {
            let mut exts = Reader::new(Reader::new(r.read(EXTENSIONS)?).read(SEQUENCE)?);
            while !exts.is_empty() {
                let mut ext = Reader::new(exts.read(SEQUENCE)?);
                let oid = ext.read(OID)?;
                ext.skip_if(BOOLEAN)?; // critical
                let value = ext.read(OCTET_STRING)?;
                if oid == OID_SUBJECT_ALT_NAME {
                    read_general_names(value, &mut info)?;
                }
            }
        }
        if !r.is_empty() {
            return Err("unexpected data after the extensions");
        }
        Ok(info)
    }

    fn read_general_names(value: &[u8], info: &mut CertInfo) -> Result<()> {
        let mut names = Reader::new(Reader::new(value).read(SEQUENCE)?);
        while !names.is_empty() {
            match names.read_any()? {
                (GN_DNS_NAME, name) => {
                    let name = std::str::from_utf8(name).map_err(|_| "dNSName is not ASCII")?;
                    if !name.is_ascii() {
                        return Err("dNSName is not ASCII");
                    }
                    info.dns_names.push(name.to_string());
                }
                (GN_IP_ADDRESS, ip) => {
                    let ip = match ip.len() {
                        4 => {
                            let mut b = [0u8; 4];
                            b.copy_from_slice(ip);
                            IpAddr::V4(Ipv4Addr::from(b))
                        }
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(ip);
                            IpAddr::V6(Ipv6Addr::from(b))
                        }
                        _ => return Err("iPAddress is neither 4 nor 16 bytes"),
                    };
                    info.ip_addresses.push(ip);
                }
                _ => {} // email, URI, directory name...: not ours to check
            }
        }
        Ok(())
    }

    /// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` (RFC 5280 4.1.2.5: always
    /// UTC, always with seconds, never fractional) as Unix seconds.
    pub(super) fn read_time(r: &mut Reader<'_>) -> Result<i64> {
        let (tag, text) = r.read_any()?;
        let (year, rest): (i64, &[u8]) = match (tag, text) {
            (UTC_TIME, [y1, y2, rest @ ..]) if rest.len() == 11 => {
                let yy = digits(&[*y1, *y2])?;
                // RFC 5280: 50..99 are 19xx, 00..49 are 20xx.
                (if yy >= 50 { 1900 + yy } else { 2000 + yy }, rest)
            }
            (GENERALIZED_TIME, [y1, y2, y3, y4, rest @ ..]) if rest.len() == 11 => {
                (digits(&[*y1, *y2, *y3, *y4])?, rest)
            }
            (UTC_TIME, _) => return Err("UTCTime is not YYMMDDHHMMSSZ"),
            (GENERALIZED_TIME, _) => return Err("GeneralizedTime is not YYYYMMDDHHMMSSZ"),
            _ => return Err("validity time is neither UTCTime nor GeneralizedTime"),
        };
        let [m1, m2, d1, d2, h1, h2, i1, i2, s1, s2, b'Z'] = rest else {
            return Err("validity time is not in UTC");
        };
        let month = digits(&[*m1, *m2])?;
        let day = digits(&[*d1, *d2])?;
        let hour = digits(&[*h1, *h2])?;
        let minute = digits(&[*i1, *i2])?;
        let second = digits(&[*s1, *s2])?;
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err("validity date does not exist");
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err("validity time of day is out of range");
        }
        Ok(days_since_epoch(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
    }

    fn digits(text: &[u8]) -> Result<i64> {
        text.iter().try_fold(0i64, |acc, &c| {
            if c.is_ascii_digit() {
                Ok(acc * 10 + i64::from(c - b'0'))
            } else {
                Err("validity time has a non-digit")
            }
        })
    }

    fn is_leap(year: i64) -> bool {
        (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
    }

    fn days_in_month(year: i64, month: i64) -> i64 {
        match month {
            2 if is_leap(year) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// Days from 1970-01-01 to a proleptic Gregorian date. Counts in 400-year cycles of
    /// 146097 days, with years starting in March so the leap day falls at a year's end.
    pub(super) fn days_since_epoch(year: i64, month: i64, day: i64) -> i64 {
        let y = if month <= 2 { year - 1 } else { year };
        let cycle = y.div_euclid(400);
        let year_of_cycle = y.rem_euclid(400);
        let month_from_march = (month + 9) % 12;
        let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
        let day_of_cycle =
            year_of_cycle * 365 + year_of_cycle / 4 - year_of_cycle / 100 + day_of_year;
        // 719468: days from 0000-03-01 to 1970-01-01.
        cycle * 146_097 + day_of_cycle - 719_468
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
    fn calendar_math_matches_known_dates() {
        assert_eq!(der::days_since_epoch(1970, 1, 1), 0);
        assert_eq!(der::days_since_epoch(2000, 3, 1), 11_017);
        assert_eq!(der::days_since_epoch(2000, 2, 29), 11_016);
        assert_eq!(der::days_since_epoch(1969, 12, 31), -1);
        // 2038-01-19T03:14:08Z is 2^31 seconds.
        assert_eq!(
            der::days_since_epoch(2038, 1, 19) * 86_400 + 3 * 3600 + 14 * 60 + 8,
            1 << 31
        );
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
    fn rejects_impossible_times() {
        for text in [
            &b"991332000000Z"[..],
            b"990230000000Z",
            b"991231240000Z",
            b"99123123000a",
            b"9912312300000",
        ] {
            let mut tlv = vec![0x17, text.len() as u8];
            tlv.extend_from_slice(text);
            assert!(
                der::read_time(&mut der::Reader::new(&tlv)).is_err(),
                "{:?}",
                std::str::from_utf8(text)
            );
        }
        let mut ok = vec![0x17, 13];
        ok.extend_from_slice(b"000229000000Z");
        assert_eq!(der::read_time(&mut der::Reader::new(&ok)), Ok(951_782_400));
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
