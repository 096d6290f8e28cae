use std::time::SystemTime;

use super::*;
use crate::certs::{CertOptions, generate_ca_at};

fn ca() -> (String, String) {
    generate_ca_at(SystemTime::now(), &CertOptions::default()).expect("CA")
}

fn fp(pem: &str) -> String {
    fingerprint(&tls::certs_from_pem(pem).expect("pem")[0])
}

#[test]
fn pinned_and_published_cas_stay_and_strangers_go() {
    let (current, key) = ca();
    let (previous, _) = ca();
    let (stranger, _) = ca();
    let bundle = format!("{current}{previous}{stranger}");
    let pinned = BTreeSet::from([fp(&current)]);
    let published = BTreeSet::from([fp(&previous)]);
    let screened = screen(
        &bundle,
        Some(&key),
        &Anchors::new(&pinned, Some(&published)),
    );
    assert_eq!(screened.bundle_pem, format!("{current}{previous}"));
    assert_eq!(screened.dropped, vec![fp(&stranger)]);
}

#[test]
fn a_ca_with_its_own_key_is_not_trusted_once_something_is_published() {
    // A consistent rewrite: a new CA together with its key.
    let (forged, forged_key) = ca();
    let (ours, _) = ca();
    let published = BTreeSet::from([fp(&ours)]);
    let anchors = Anchors::new(&BTreeSet::new(), Some(&published));
    assert!(!anchors.key_ca);
    let screened = screen(&forged, Some(&forged_key), &anchors);
    assert!(screened.bundle_pem.is_empty());
    assert_eq!(screened.dropped, vec![fp(&forged)]);
}

#[test]
fn the_key_ca_is_trusted_on_first_use_and_when_nothing_is_published() {
    let (current, key) = ca();
    let (stranger, _) = ca();
    let bundle = format!("{current}{stranger}");
    for anchors in [
        Anchors::new(&BTreeSet::new(), Some(&BTreeSet::new())),
        Anchors::new(&BTreeSet::new(), None),
    ] {
        assert!(anchors.key_ca);
        let screened = screen(&bundle, Some(&key), &anchors);
        assert_eq!(screened.bundle_pem, current);
        assert_eq!(screened.dropped, vec![fp(&stranger)]);
    }
    // Once this process pinned a CA, first use is over.
    let pinned = BTreeSet::from([fp(&stranger)]);
    assert!(!Anchors::new(&pinned, Some(&BTreeSet::new())).key_ca);
}

#[test]
fn garbage_keeps_nothing() {
    let screened = screen("not a certificate", None, &Anchors::default());
    assert!(screened.bundle_pem.is_empty());
    assert_eq!(screened.dropped, vec![UNREADABLE.to_string()]);
    assert!(fingerprints("not a certificate").is_empty());
}
