//! The TLS Secret as the one source of truth: reading it, deciding (see [`decide`]),
//! writing it back guarded by its resourceVersion, and settling races between replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info};

use crate::certs::bundle::{
    CertBundle, CertError, CertOptions, KEY_CA_CERT, KEY_CA_KEY, KEY_TLS_CERT, KEY_TLS_KEY,
    SECRET_TYPE_TLS, SecretData,
};
use crate::certs::decision::{Action, Reason, apply_action, decide};
use crate::certs::issue::validate_sans;
use crate::certs::tls;
use crate::certs::trust;
use crate::model::names;

/// Where earlier builds recorded the CAs they issued, taken off on the next write.
const LEGACY_ISSUED_CAS_ANNOTATION: &str = "cyberdesk.io/issued-ca-fingerprints";

/// How often a Secret write is retried when another replica wrote it in between.
pub(crate) const WRITE_ATTEMPTS: u32 = 5;

/// Where the TLS Secret lives; a trait so the rotation logic runs in tests without an
/// apiserver (the real one is exercised end to end).
pub trait SecretStore: Send + Sync {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn get(&self) -> impl Future<Output = Result<Option<Secret>, CertError>> + Send;
    fn create(&self, secret: &Secret) -> impl Future<Output = Result<(), WriteError>> + Send;
    /// Replaces the Secret, guarded by the resourceVersion in `secret`.
    fn replace(&self, secret: &Secret) -> impl Future<Output = Result<(), WriteError>> + Send;
}

/// A Secret write that lost a race is retried; anything else is an error.
#[derive(Debug)]
pub enum WriteError {
    AlreadyExists,
    Conflict,
    Failed(CertError),
}

#[derive(Clone)]
pub struct KubeSecretStore {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl KubeSecretStore {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn error(&self, verb: &'static str, source: kube::Error) -> CertError {
        CertError::Kube {
            verb,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source: Box::new(source),
        }
    }
}

impl SecretStore for KubeSecretStore {
    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self) -> Result<Option<Secret>, CertError> {
        self.api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("read", e))
    }

    async fn create(&self, secret: &Secret) -> Result<(), WriteError> {
        match self.api.create(&PostParams::default(), secret).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                Err(WriteError::AlreadyExists)
            }
            Err(e) => Err(WriteError::Failed(self.error("create", e))),
        }
    }

    async fn replace(&self, secret: &Secret) -> Result<(), WriteError> {
        match self
            .api
            .replace(&self.name, &PostParams::default(), secret)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_conflict() => Err(WriteError::Conflict),
            Err(e) => Err(WriteError::Failed(self.error("update", e))),
        }
    }
}

fn secret_data(bundle: &CertBundle) -> BTreeMap<String, ByteString> {
    [
        (KEY_CA_CERT, &bundle.ca_cert_pem),
        (KEY_CA_KEY, &bundle.ca_key_pem),
        (KEY_TLS_CERT, &bundle.cert_pem),
        (KEY_TLS_KEY, &bundle.key_pem),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect()
}

pub(crate) fn new_secret(namespace: &str, name: &str, bundle: &CertBundle) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                names::LABEL_K8S_MANAGED_BY.to_string(),
                names::MANAGED_BY_VALUE.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE_TLS.to_string()),
        data: Some(secret_data(bundle)),
        ..Secret::default()
    }
}

/// `existing` with our four keys replaced; other keys, labels and the resourceVersion stay.
pub(crate) fn updated_secret(mut existing: Secret, bundle: &CertBundle) -> Secret {
    existing.metadata.managed_fields = None;
    // Earlier builds recorded issued CAs here; nothing reads it now (see `trust`).
    if let Some(annotations) = existing.metadata.annotations.as_mut() {
        annotations.remove(LEGACY_ISSUED_CAS_ANNOTATION);
    }
    let data = existing.data.get_or_insert_with(BTreeMap::new);
    data.extend(secret_data(bundle));
    existing
}

/// Reads the TLS Secret and makes it hold a usable CA and leaf for `sans`, creating or
/// rotating as needed. Races with other replicas end with everyone using the winner's
/// certificates.
pub async fn ensure_secret_in<S: SecretStore>(
    store: &S,
    sans: &[String],
    opts: &CertOptions,
    now: SystemTime,
) -> Result<CertBundle, CertError> {
    let anchors = trust::Anchors::new(&Default::default(), None);
    ensure_trusted(store, sans, opts, now, None, &anchors, &Default::default())
        .await
        .map(|e| e.bundle)
}

/// What a check of the Secret settled on, and the foreign CAs it took out of `ca.crt`.
#[derive(Clone, Debug)]
pub struct Ensured {
    pub bundle: CertBundle,
    /// SHA-256 fingerprints of certificates dropped because the operator did not issue them.
    pub dropped_cas: Vec<String>,
    /// The resourceVersion of the Secret they were dropped from.
    pub dropped_from: Option<String>,
}

/// [`ensure_secret_in`], trusting only the CAs `anchors` vouches for (see [`trust`]) and
/// repairing the Secret when it held others. A readable certificate no anchor vouches for
/// is only repaired once it was already found on an earlier check (`suspects`): a peer
/// replica writes a new CA to the Secret a moment before it publishes it, and a check in
/// between must not take it for a forgery. Until then the answer is
/// [`CertError::UnverifiedCa`] and nothing is written. `last_published`: the bundle this
/// replica last put into the webhook configurations; when `ca.crt` has become unreadable it
/// stays in the new bundle, so no replica's serving certificate is untrusted while they move
/// to the new CA.
pub async fn ensure_trusted<S: SecretStore>(
    store: &S,
    sans: &[String],
    opts: &CertOptions,
    now: SystemTime,
    last_published: Option<&str>,
    anchors: &trust::Anchors,
    suspects: &BTreeSet<String>,
) -> Result<Ensured, CertError> {
    validate_sans(sans)?;
    let (namespace, name) = (store.namespace(), store.name());
    for attempt in 1..=WRITE_ATTEMPTS {
        let existing = store.get().await?;
        let mut data = existing.as_ref().map(SecretData::from_secret);
        let mut dropped = Vec::new();
        if let Some(d) = data.as_mut()
            && let Some(ca_pem) = d.ca_cert_pem.clone()
        {
            let screened = trust::screen(&ca_pem, d.ca_key_pem.as_deref(), anchors);
            let unverified: Vec<String> = screened
                .dropped
                .iter()
                .filter(|fp| fp.as_str() != trust::UNREADABLE && !suspects.contains(*fp))
                .cloned()
                .collect();
            if !unverified.is_empty() {
                return Err(CertError::UnverifiedCa {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    fingerprints: unverified,
                });
            }
            if !screened.dropped.is_empty() {
                d.ca_cert_pem = (!screened.bundle_pem.is_empty()).then_some(screened.bundle_pem);
                dropped = screened.dropped;
            }
        }
        let mut action = decide(data.as_ref(), sans, now, opts);
        if let Action::Regenerate {
            reason: Reason::CaUnreadable,
            previous_ca: previous @ None,
        } = &mut action
        {
            *previous = last_published.map(str::to_string);
        }
        let (reason, ca_renewed) = match &action {
            Action::UseAsIs => match data.as_ref().and_then(SecretData::bundle) {
                Some(bundle) if dropped.is_empty() => {
                    return Ok(Ensured {
                        bundle,
                        dropped_cas: dropped,
                        dropped_from: None,
                    });
                }
                Some(_) => (Reason::UntrustedCa, false),
                None => (Reason::Missing, true),
            },
            Action::RotateLeaf { reason } => (*reason, false),
            Action::Regenerate { reason, .. } => (*reason, true),
        };
        let bundle = apply_action(data.as_ref(), &action, sans, now, opts)?;
        let not_after = tls::cert_not_after(&bundle.cert_pem)?;
        let dropped_from = existing
            .as_ref()
            .filter(|_| !dropped.is_empty())
            .and_then(|s| s.metadata.resource_version.clone());
        let written = match existing {
            None => store.create(&new_secret(namespace, name, &bundle)).await,
            Some(secret) => store.replace(&updated_secret(secret, &bundle)).await,
        };
        match written {
            Ok(()) => {
                info!(
                    secret = name,
                    namespace,
                    reason = %reason,
                    new_ca = ca_renewed,
                    not_after,
                    "webhook certificate written to the Secret"
                );
                return Ok(Ensured {
                    bundle,
                    dropped_cas: dropped,
                    dropped_from,
                });
            }
            Err(WriteError::AlreadyExists | WriteError::Conflict) => {
                debug!(
                    secret = name,
                    namespace, attempt, "another replica wrote the Secret first; reading theirs"
                );
            }
            Err(WriteError::Failed(e)) => return Err(e),
        }
    }
    Err(CertError::Contention {
        namespace: namespace.to_string(),
        name: name.to_string(),
        attempts: WRITE_ATTEMPTS,
    })
}
