//! The pure heart of self-managed mode: what the Secret's contents call for (use, rotate
//! the leaf, or regenerate the CA) and the new contents that answer it.

use std::fmt;
use std::time::SystemTime;

use tracing::warn;

use crate::certs::bundle::{CertBundle, CertError, CertOptions, SecretData, der_to_pem, unix};
use crate::certs::issue::{generate_ca_at, issue_serving_at, verify_leaf};
use crate::certs::tls::{self, CertInfo, TlsError};

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

/// Less than `fraction` of the lifetime left (or already expired).
fn expiring(info: &CertInfo, now: SystemTime, fraction: f64) -> bool {
    let now = unix(now);
    let lifetime = info.not_after.saturating_sub(info.not_before).max(0);
    let remaining = info.not_after.saturating_sub(now);
    remaining <= 0 || (remaining as f64) < (lifetime as f64) * fraction
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

pub(crate) fn check_leaf(
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

/// The bundle without the previous CA. Dropped at the first leaf rotation after a CA
/// change: by then every replica serves a leaf of the new CA, and trust in a CA whose key
/// we no longer hold should not linger. A one-CA bundle comes back untouched, so an
/// unchanged bundle never looks like a new CA.
pub(crate) fn current_ca_only(bundle_pem: &str) -> String {
    match tls::certs_from_pem(bundle_pem) {
        Ok(certs) if certs.len() > 1 => certs
            .first()
            .map(|c| der_to_pem(c))
            .unwrap_or_else(|| bundle_pem.to_string()),
        _ => bundle_pem.to_string(),
    }
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
