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
    let (cert, key) = self_signed(&CertificateParams::new(vec!["a".to_string()]).expect("params"));
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
    let (cert, key) = self_signed(&CertificateParams::new(vec!["a".to_string()]).expect("params"));
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
