//! Tests for certificate generation, the Secret decisions, the rotation loop (against an
//! in-memory Secret store) and files mode.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use super::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Secret;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::CertificateDer;

use crate::certs::decision::{check_leaf, current_ca_only};
use crate::certs::issue::verify_leaf;
use crate::certs::tls::{CertInfo, TlsError};

use crate::certs::tls::CertResolver;
use crate::metrics::Metrics;
use k8s_openapi::ByteString;

const DAY_SECS: u64 = 86_400;

fn sans() -> Vec<String> {
    [
        "cyberdesk-operator.cyberdesk-system.svc",
        "cyberdesk-operator",
        "127.0.0.1",
    ]
    .map(String::from)
    .to_vec()
}

fn at(base: SystemTime, days: u64) -> SystemTime {
    base + Duration::from_secs(days * DAY_SECS)
}

fn metrics() -> Metrics {
    Metrics::new("test", &[]).expect("metrics")
}

fn fresh(now: SystemTime, opts: &CertOptions) -> CertBundle {
    apply_action(None, &decide(None, &sans(), now, opts), &sans(), now, opts).expect("bundle")
}

fn leaf_der(cert_pem: &str) -> Vec<u8> {
    tls::certs_from_pem(cert_pem).expect("certs")[0].to_vec()
}

fn ca_count(bundle_pem: &str) -> usize {
    tls::certs_from_pem(bundle_pem).expect("bundle").len()
}

/// A full TLS handshake over an in-memory pipe, the client trusting only `ca_pem`.
/// Returns the leaf the server presented and the ALPN protocol agreed.
async fn handshake(
    resolver: Arc<CertResolver>,
    ca_pem: &str,
    name: &str,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let server_config = Arc::new(tls::server_config(resolver).expect("server config"));
    let mut roots = rustls::RootCertStore::empty();
    for ca in tls::certs_from_pem(ca_pem).expect("ca") {
        roots.add(ca).expect("root");
    }
    let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    client_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = async move {
        let mut tls = TlsAcceptor::from(server_config)
            .accept(server_io)
            .await
            .expect("server handshake");
        tls.write_all(b"ok").await.expect("write");
        tls.shutdown().await.expect("shutdown");
    };
    let name = ServerName::try_from(name.to_string()).expect("name");
    let client = async move {
        let mut tls = TlsConnector::from(Arc::new(client_config))
            .connect(name, client_io)
            .await
            .expect("client handshake");
        let (_, conn) = tls.get_ref();
        let peer = conn.peer_certificates().expect("peer certs")[0].to_vec();
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        let mut body = Vec::new();
        tls.read_to_end(&mut body).await.expect("read");
        assert_eq!(body, b"ok");
        (peer, alpn)
    };
    let ((), result) = tokio::join!(server, client);
    result
}

#[tokio::test]
async fn resolver_serves_a_leaf_the_ca_validates_and_swaps_in_place() {
    let (ca_cert, ca_key) = generate_ca(DEFAULT_CA_VALIDITY).expect("ca");
    let (cert_a, key_a) =
        issue_serving(&ca_cert, &ca_key, &sans(), DEFAULT_LEAF_VALIDITY).expect("leaf a");
    let (cert_b, key_b) =
        issue_serving(&ca_cert, &ca_key, &sans(), DEFAULT_LEAF_VALIDITY).expect("leaf b");
    assert_ne!(cert_a, cert_b);

    let resolver = Arc::new(CertResolver::new());
    resolver.swap(Arc::new(
        tls::certified_key_from_pem(&cert_a, &key_a).expect("pair a"),
    ));
    let (peer, alpn) = handshake(
        resolver.clone(),
        &ca_cert,
        "cyberdesk-operator.cyberdesk-system.svc",
    )
    .await;
    assert_eq!(peer, leaf_der(&cert_a));
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));

    resolver.swap(Arc::new(
        tls::certified_key_from_pem(&cert_b, &key_b).expect("pair b"),
    ));
    let (peer, _) = handshake(resolver.clone(), &ca_cert, "cyberdesk-operator").await;
    assert_eq!(peer, leaf_der(&cert_b));
}

#[test]
fn generated_certificates_have_the_wanted_shape() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let bundle = fresh(now, &opts);
    let ca = CertInfo::from_pem(&bundle.ca_cert_pem).expect("ca info");
    let leaf = CertInfo::from_pem(&bundle.cert_pem).expect("leaf info");
    assert_eq!(
        ca.not_after - ca.not_before,
        (DEFAULT_CA_VALIDITY + DEFAULT_BACKDATE).as_secs() as i64
    );
    assert_eq!(
        leaf.not_after - leaf.not_before,
        (DEFAULT_LEAF_VALIDITY + DEFAULT_BACKDATE).as_secs() as i64
    );
    assert!(leaf.not_before < unix(now));
    for san in sans() {
        assert!(leaf.covers(&san), "{san}");
    }
    assert!(bundle.key_pem.contains("BEGIN PRIVATE KEY"));
    assert!(
        verify_leaf(
            &bundle.ca_cert_pem,
            &CertificateDer::from(leaf_der(&bundle.cert_pem)),
            "127.0.0.1",
            now
        )
        .is_ok()
    );
}

#[test]
fn a_leaf_never_outlives_its_ca() {
    let now = SystemTime::now();
    let opts = CertOptions {
        ca_validity: Duration::from_secs(10 * DAY_SECS),
        ..CertOptions::default()
    };
    let bundle = fresh(now, &opts);
    let ca = CertInfo::from_pem(&bundle.ca_cert_pem).expect("ca");
    let leaf = CertInfo::from_pem(&bundle.cert_pem).expect("leaf");
    assert_eq!(leaf.not_after, ca.not_after);
}

#[test]
fn bad_sans_are_refused_up_front() {
    assert!(matches!(validate_sans(&[]), Err(CertError::NoSans)));
    assert!(matches!(
        validate_sans(&["bad name".to_string()]),
        Err(CertError::InvalidSan(_))
    ));
    assert!(
        validate_sans(&[
            "*.example.com".to_string(),
            "::1".to_string(),
            "svc".to_string()
        ])
        .is_ok()
    );
    let (ca_cert, ca_key) = generate_ca(DEFAULT_CA_VALIDITY).expect("ca");
    assert!(matches!(
        issue_serving(
            &ca_cert,
            &ca_key,
            &["a b".to_string()],
            DEFAULT_LEAF_VALIDITY
        ),
        Err(CertError::InvalidSan(_))
    ));
}

#[test]
fn a_leaf_is_replaced_when_expiring_unreadable_or_missing_a_san() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let bundle = fresh(now, &opts);
    let data = SecretData::from(&bundle);
    let check = |sans: &[String], t| check_leaf(&data, sans, t, &opts);
    assert_eq!(check(&sans(), now), Ok(()));
    // 90-day leaf, rotated once fewer than 30 days are left.
    assert_eq!(check(&sans(), at(now, 59)), Ok(()));
    assert_eq!(check(&sans(), at(now, 61)), Err(Reason::LeafExpiring));
    assert_eq!(check(&sans(), at(now, 91)), Err(Reason::LeafExpiring));
    let mut more = sans();
    more.push("new.example.com".to_string());
    assert_eq!(check(&more, now), Err(Reason::SansChanged));
    assert_eq!(check(&sans()[..1], now), Ok(()));
    for unreadable in ["not a certificate", bundle.key_pem.as_str()] {
        let mut broken = SecretData::from(&bundle);
        broken.cert_pem = Some(unreadable.to_string());
        assert_eq!(
            check_leaf(&broken, &sans(), now, &opts),
            Err(Reason::LeafUnreadable)
        );
    }
}

#[test]
fn decide_covers_every_state_of_the_secret() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let s = sans();
    let bundle = fresh(now, &opts);
    let good = SecretData::from(&bundle);

    assert_eq!(
        decide(None, &s, now, &opts),
        Action::Regenerate {
            reason: Reason::Missing,
            previous_ca: None
        }
    );
    assert_eq!(decide(Some(&good), &s, now, &opts), Action::UseAsIs);
    assert_eq!(decide(Some(&good), &s, at(now, 59), &opts), Action::UseAsIs);
    assert_eq!(
        decide(Some(&good), &s, at(now, 61), &opts),
        Action::RotateLeaf {
            reason: Reason::LeafExpiring
        }
    );
    let mut more = s.clone();
    more.push("10.0.0.1".to_string());
    assert_eq!(
        decide(Some(&good), &more, now, &opts),
        Action::RotateLeaf {
            reason: Reason::SansChanged
        }
    );

    let other = fresh(now, &opts);
    let swapped_key = SecretData {
        key_pem: Some(other.key_pem.clone()),
        ..good.clone()
    };
    assert_eq!(
        decide(Some(&swapped_key), &s, now, &opts),
        Action::RotateLeaf {
            reason: Reason::LeafKeyMismatch
        }
    );
    let foreign_leaf = SecretData {
        cert_pem: Some(other.cert_pem.clone()),
        key_pem: Some(other.key_pem.clone()),
        ..good.clone()
    };
    assert_eq!(
        decide(Some(&foreign_leaf), &s, now, &opts),
        Action::RotateLeaf {
            reason: Reason::LeafNotIssuedByCa
        }
    );
    let no_leaf_key = SecretData {
        key_pem: None,
        ..good.clone()
    };
    assert_eq!(
        decide(Some(&no_leaf_key), &s, now, &opts),
        Action::RotateLeaf {
            reason: Reason::LeafUnreadable
        }
    );

    let ca_alone = der_to_pem(&leaf_der(&bundle.ca_cert_pem));
    let wrong_ca_key = SecretData {
        ca_key_pem: Some(other.ca_key_pem.clone()),
        ..good.clone()
    };
    assert_eq!(
        decide(Some(&wrong_ca_key), &s, now, &opts),
        Action::Regenerate {
            reason: Reason::CaKeyMismatch,
            previous_ca: Some(ca_alone.clone())
        }
    );
    let no_ca_key = SecretData {
        ca_key_pem: None,
        ..good.clone()
    };
    assert!(matches!(
        decide(Some(&no_ca_key), &s, now, &opts),
        Action::Regenerate {
            reason: Reason::CaUnreadable,
            ..
        }
    ));
    let garbage_ca = SecretData {
        ca_cert_pem: Some("garbage".to_string()),
        ..good.clone()
    };
    assert_eq!(
        decide(Some(&garbage_ca), &s, now, &opts),
        Action::Regenerate {
            reason: Reason::CaUnreadable,
            previous_ca: None
        }
    );
    // Ten-year CA: replaced with a third of its life left, kept in the bundle meanwhile.
    assert_eq!(
        decide(Some(&good), &s, at(now, 2_500), &opts),
        Action::Regenerate {
            reason: Reason::CaExpiring,
            previous_ca: Some(ca_alone)
        }
    );
    assert!(matches!(
        decide(Some(&good), &s, at(now, 3_651), &opts),
        Action::Regenerate {
            reason: Reason::CaExpiring,
            previous_ca: None
        }
    ));
}

#[test]
fn rotating_the_leaf_keeps_the_ca_and_regenerating_keeps_the_old_ca_trusted() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let s = sans();
    let bundle = fresh(now, &opts);
    let data = SecretData::from(&bundle);

    let later = at(now, 61);
    let action = decide(Some(&data), &s, later, &opts);
    let rotated = apply_action(Some(&data), &action, &s, later, &opts).expect("rotate");
    assert_eq!(rotated.ca_cert_pem, bundle.ca_cert_pem);
    assert_eq!(rotated.ca_key_pem, bundle.ca_key_pem);
    assert_ne!(rotated.cert_pem, bundle.cert_pem);
    assert_eq!(
        decide(Some(&SecretData::from(&rotated)), &s, later, &opts),
        Action::UseAsIs
    );

    let much_later = at(now, 2_500);
    let action = decide(Some(&data), &s, much_later, &opts);
    let renewed = apply_action(Some(&data), &action, &s, much_later, &opts).expect("regenerate");
    assert_ne!(renewed.ca_key_pem, bundle.ca_key_pem);
    assert_eq!(ca_count(&renewed.ca_cert_pem), 2);
    let renewed_data = SecretData::from(&renewed);
    assert_eq!(
        decide(Some(&renewed_data), &s, much_later, &opts),
        Action::UseAsIs
    );
    // The old CA still validates the old leaf through the new bundle.
    let old_leaf = CertificateDer::from(leaf_der(&bundle.cert_pem));
    let old_ca_only = tls::certs_from_pem(&renewed.ca_cert_pem).expect("bundle")[1].to_vec();
    assert!(
        verify_leaf(
            &der_to_pem(&old_ca_only),
            &old_leaf,
            "cyberdesk-operator",
            at(now, 1)
        )
        .is_ok()
    );

    // The next leaf rotation drops the previous CA from the bundle.
    let next = at(now, 2_561);
    let action = decide(Some(&renewed_data), &s, next, &opts);
    assert_eq!(
        action,
        Action::RotateLeaf {
            reason: Reason::LeafExpiring
        }
    );
    let rotated_again =
        apply_action(Some(&renewed_data), &action, &s, next, &opts).expect("rotate");
    assert_eq!(ca_count(&rotated_again.ca_cert_pem), 1);
    assert_eq!(
        leaf_der(&rotated_again.ca_cert_pem),
        leaf_der(&renewed.ca_cert_pem)
    );
    assert_eq!(
        current_ca_only(&rotated_again.ca_cert_pem),
        rotated_again.ca_cert_pem
    );
}

#[test]
fn a_foreign_ca_that_cannot_issue_is_replaced() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let s = sans();
    // A CA under another name: our Issuer (rebuilt from our own name) cannot chain to it.
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = now.into();
    params.not_after = at(now, 3_000).into();
    let foreign = SecretData {
        ca_cert_pem: Some(params.self_signed(&key).expect("foreign ca").pem()),
        ca_key_pem: Some(key.serialize_pem()),
        ..SecretData::default()
    };
    let action = decide(Some(&foreign), &s, now, &opts);
    assert_eq!(
        action,
        Action::RotateLeaf {
            reason: Reason::LeafUnreadable
        }
    );
    assert!(matches!(
        issue_serving(
            foreign.ca_cert_pem.as_deref().unwrap_or_default(),
            &key.serialize_pem(),
            &s,
            DEFAULT_LEAF_VALIDITY
        ),
        Err(CertError::CaMismatch(_))
    ));
    let bundle = apply_action(Some(&foreign), &action, &s, now, &opts).expect("replaced");
    assert_eq!(ca_count(&bundle.ca_cert_pem), 2);
    assert_eq!(
        decide(Some(&SecretData::from(&bundle)), &s, now, &opts),
        Action::UseAsIs
    );
}

#[test]
fn debug_output_never_shows_keys() {
    let bundle = fresh(SystemTime::now(), &CertOptions::default());
    let text = format!("{bundle:?} {:?}", SecretData::from(&bundle));
    assert!(!text.contains("PRIVATE KEY"));
    assert!(text.contains("<redacted>"));
}

/// An in-memory Secret store with resourceVersions, and knobs to lose races.
#[derive(Default)]
struct MemStore {
    state: Mutex<MemState>,
    creates: AtomicU32,
    replaces: AtomicU32,
}

#[derive(Default)]
struct MemState {
    secret: Option<Secret>,
    version: u64,
    /// Another replica's Secret that appears just before our create.
    racing_create: Option<Secret>,
    /// Writes by other replicas that land just before our next replaces.
    conflicts: u32,
}

impl MemState {
    fn store(&mut self, mut secret: Secret) {
        self.version += 1;
        secret.metadata.resource_version = Some(self.version.to_string());
        self.secret = Some(secret);
    }
}

impl MemStore {
    fn with_bundle(bundle: &CertBundle) -> Self {
        let store = Self::default();
        store.put(bundle);
        store
    }

    /// What another replica writing the Secret looks like.
    fn put(&self, bundle: &CertBundle) {
        let mut state = self.state.lock().expect("lock");
        let secret = match state.secret.clone() {
            Some(existing) => updated_secret(existing, bundle),
            None => new_secret("ns", "tls", bundle),
        };
        state.store(secret);
    }

    fn bundle(&self) -> Option<CertBundle> {
        let state = self.state.lock().expect("lock");
        state
            .secret
            .as_ref()
            .map(SecretData::from_secret)
            .and_then(|d| d.bundle())
    }
}

impl SecretStore for MemStore {
    fn namespace(&self) -> &str {
        "ns"
    }

    fn name(&self) -> &str {
        "tls"
    }

    async fn get(&self) -> Result<Option<Secret>, CertError> {
        Ok(self.state.lock().expect("lock").secret.clone())
    }

    async fn create(&self, secret: &Secret) -> Result<(), WriteError> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state.lock().expect("lock");
        if let Some(theirs) = state.racing_create.take() {
            state.store(theirs);
        }
        if state.secret.is_some() {
            return Err(WriteError::AlreadyExists);
        }
        state.store(secret.clone());
        Ok(())
    }

    async fn replace(&self, secret: &Secret) -> Result<(), WriteError> {
        self.replaces.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state.lock().expect("lock");
        if state.conflicts > 0 {
            state.conflicts -= 1;
            let current = state.secret.clone().expect("secret to conflict with");
            state.store(current);
        }
        let current_version = state
            .secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        if secret.metadata.resource_version != current_version {
            return Err(WriteError::Conflict);
        }
        state.store(secret.clone());
        Ok(())
    }
}

#[tokio::test]
async fn ensure_secret_creates_then_reuses() {
    let store = MemStore::default();
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let created = ensure_secret_in(&store, &sans(), &opts, now)
        .await
        .expect("create");
    let again = ensure_secret_in(&store, &sans(), &opts, at(now, 1))
        .await
        .expect("reuse");
    assert_eq!(created, again);
    assert_eq!(store.creates.load(Ordering::SeqCst), 1);
    assert_eq!(store.replaces.load(Ordering::SeqCst), 0);
    let secret = store
        .state
        .lock()
        .expect("lock")
        .secret
        .clone()
        .expect("secret");
    assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE_TLS));
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, vec!["ca.crt", "ca.key", "tls.crt", "tls.key"]);
}

#[tokio::test]
async fn losing_the_create_race_uses_the_winners_secret() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let theirs = fresh(now, &opts);
    let store = MemStore::default();
    store.state.lock().expect("lock").racing_create = Some(new_secret("ns", "tls", &theirs));
    let ours = ensure_secret_in(&store, &sans(), &opts, now)
        .await
        .expect("ensure");
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn update_conflicts_are_retried_and_then_given_up() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let old = fresh(now, &opts);
    let later = at(now, 61);

    let store = MemStore::with_bundle(&old);
    store.state.lock().expect("lock").conflicts = 2;
    let rotated = ensure_secret_in(&store, &sans(), &opts, later)
        .await
        .expect("rotated");
    assert_ne!(rotated.cert_pem, old.cert_pem);
    assert_eq!(rotated.ca_cert_pem, old.ca_cert_pem);
    assert_eq!(store.replaces.load(Ordering::SeqCst), 3);
    assert_eq!(store.bundle(), Some(rotated));

    let stuck = MemStore::with_bundle(&old);
    stuck.state.lock().expect("lock").conflicts = u32::MAX;
    assert!(matches!(
        ensure_secret_in(&stuck, &sans(), &opts, later).await,
        Err(CertError::Contention {
            attempts: WRITE_ATTEMPTS,
            ..
        })
    ));
}

#[tokio::test]
async fn ensure_secret_keeps_foreign_keys_in_the_secret() {
    let now = SystemTime::now();
    let opts = CertOptions::default();
    let store = MemStore::with_bundle(&fresh(now, &opts));
    {
        let mut state = store.state.lock().expect("lock");
        let mut secret = state.secret.clone().expect("secret");
        secret
            .data
            .get_or_insert_with(BTreeMap::new)
            .insert("extra".into(), ByteString(b"x".to_vec()));
        state.store(secret);
    }
    ensure_secret_in(&store, &sans(), &opts, at(now, 61))
        .await
        .expect("rotate");
    let secret = store
        .state
        .lock()
        .expect("lock")
        .secret
        .clone()
        .expect("secret");
    assert!(secret.data.expect("data").contains_key("extra"));
}

/// Records every CA bundle handed over; fails while `fail` is set.
#[derive(Clone, Default)]
struct Publisher {
    published: Arc<Mutex<Vec<String>>>,
    fail: Arc<std::sync::atomic::AtomicBool>,
    /// How often the webhook configurations were read.
    reads: Arc<AtomicU32>,
}

impl Publisher {
    fn callback(&self) -> impl Fn(String) -> std::future::Ready<Result<(), String>> + use<> {
        let this = self.clone();
        move |ca| {
            if this.fail.load(Ordering::SeqCst) {
                return std::future::ready(Err("apiserver unavailable".to_string()));
            }
            this.published.lock().expect("lock").push(ca);
            std::future::ready(Ok(()))
        }
    }

    fn count(&self) -> usize {
        self.published.lock().expect("lock").len()
    }

    /// What the webhook configurations hold: the last bundle handed over.
    fn reader(&self) -> PublishedReader {
        let this = self.clone();
        Box::new(move || {
            this.reads.fetch_add(1, Ordering::SeqCst);
            let last = this.published.lock().expect("lock").last().cloned();
            Box::pin(std::future::ready(Ok(last.unwrap_or_default())))
        })
    }

    fn ever_published(&self, pem: &str) -> bool {
        self.published
            .lock()
            .expect("lock")
            .iter()
            .any(|b| b.contains(pem.trim()))
    }
}

/// A loop that reads its trust anchor from what it published, after its first check.
async fn anchored_loop(
    now: SystemTime,
    publisher: &Publisher,
) -> SelfManaged<MemStore, impl Fn(String) -> std::future::Ready<Result<(), String>> + use<>> {
    let mut loop_ = SelfManaged::new(
        MemStore::default(),
        SelfManagedConfig::new("ns", "tls", sans()),
        Arc::new(CertResolver::new()),
        metrics(),
        publisher.callback(),
    )
    .with_published_reader(publisher.reader());
    let first = loop_.tick_at(now).await.expect("first use");
    assert!(first.published_ca && first.swapped);
    loop_
}

#[tokio::test]
async fn a_consistently_forged_secret_is_never_published_and_is_replaced() {
    let now = SystemTime::now();
    let publisher = Publisher::default();
    let mut loop_ = anchored_loop(now, &publisher).await;
    let ours = loop_.store().bundle().expect("secret").ca_cert_pem;

    // Whoever can write the Secret writes a CA, its key and a leaf of their own.
    let forged = fresh(now, &CertOptions::default());
    loop_.store().put(&forged);
    let first_sight = loop_.tick_at(at(now, 0)).await.expect("checked");
    assert!(!first_sight.published_ca && !first_sight.swapped);
    assert_eq!(first_sight.swap_due_in, Some(DEFAULT_CA_SETTLE));
    let second_sight = loop_.tick_at(at(now, 0)).await.expect("repaired");
    assert!(!publisher.ever_published(&forged.ca_cert_pem));
    let repaired = loop_.store().bundle().expect("secret");
    assert!(!repaired.ca_cert_pem.contains(forged.ca_cert_pem.trim()));
    assert_ne!(repaired.ca_key_pem, forged.ca_key_pem);
    assert!(repaired.ca_cert_pem.contains(ours.trim()) || second_sight.published_ca);
}

#[tokio::test]
async fn a_secret_of_pinned_cas_needs_no_read_of_the_configurations() {
    let now = SystemTime::now();
    let publisher = Publisher::default();
    let mut loop_ = anchored_loop(now, &publisher).await;
    let reads = publisher.reads.load(Ordering::SeqCst);
    assert!(!loop_.tick_at(now).await.expect("quiet").published_ca);
    assert_eq!(publisher.reads.load(Ordering::SeqCst), reads);
}

#[tokio::test]
async fn a_ca_appended_to_the_secret_is_never_published() {
    let now = SystemTime::now();
    let publisher = Publisher::default();
    let mut loop_ = anchored_loop(now, &publisher).await;
    let mut bundle = loop_.store().bundle().expect("secret");
    let ours = bundle.ca_cert_pem.clone();
    let (stranger, _) = generate_ca_at(now, &CertOptions::default()).expect("CA");
    bundle.ca_cert_pem = format!("{ours}{stranger}");
    loop_.store().put(&bundle);
    loop_.tick_at(now).await.expect("first sight");
    loop_.tick_at(now).await.expect("second sight");
    assert!(!publisher.ever_published(&stranger));
    assert_eq!(loop_.store().bundle().expect("secret").ca_cert_pem, ours);
    assert_eq!(publisher.count(), 1);
}

#[tokio::test]
async fn a_peers_new_ca_is_trusted_once_published() {
    let now = SystemTime::now();
    let publisher = Publisher::default();
    let mut loop_ = anchored_loop(now, &publisher).await;
    let bundle = loop_.store().bundle().expect("secret");
    // A peer replaces the CA and publishes it before this replica looks.
    let peer = apply_action(
        Some(&SecretData::from(&bundle)),
        &Action::Regenerate {
            reason: Reason::CaExpiring,
            previous_ca: Some(bundle.ca_cert_pem.clone()),
        },
        &sans(),
        now,
        &CertOptions::default(),
    )
    .expect("peer CA");
    loop_.store().put(&peer);
    publisher
        .published
        .lock()
        .expect("lock")
        .push(peer.ca_cert_pem.clone());
    let tick = loop_.tick_at(now).await.expect("checked");
    // Trusted at once (no second look), and left as the peer wrote it.
    assert!(tick.published_ca, "{tick:?}");
    assert_eq!(loop_.store().bundle().expect("secret"), peer);
}

fn served_leaf(resolver: &CertResolver) -> Vec<u8> {
    resolver.current().expect("loaded").cert[0].to_vec()
}

#[tokio::test]
async fn one_check_at_a_time_loads_rotates_and_publishes_only_new_cas() {
    let now = SystemTime::now();
    let resolver = Arc::new(CertResolver::new());
    let metrics = metrics();
    let publisher = Publisher::default();
    let cfg = SelfManagedConfig::new("ns", "tls", sans());
    let mut loop_ = SelfManaged::new(
        MemStore::default(),
        cfg,
        resolver.clone(),
        metrics.clone(),
        publisher.callback(),
    );

    let first = loop_.tick_at(now).await.expect("first");
    assert!(first.swapped && first.published_ca);
    assert!(resolver.is_loaded());
    let bundle = loop_.store().bundle().expect("secret");
    assert_eq!(served_leaf(&resolver), leaf_der(&bundle.cert_pem));
    assert_eq!(
        first.not_after,
        Some(tls::cert_not_after(&bundle.cert_pem).expect("not after"))
    );
    assert_eq!(
        metrics.cert_expiry.get(),
        first.not_after.unwrap_or_default() as f64
    );

    let quiet = loop_.tick_at(at(now, 1)).await.expect("quiet");
    assert!(!quiet.swapped && !quiet.published_ca);

    // Leaf rotation: same CA, so nothing to publish.
    let rotated = loop_.tick_at(at(now, 61)).await.expect("rotate");
    assert!(rotated.swapped && !rotated.published_ca);
    let bundle2 = loop_.store().bundle().expect("secret");
    assert_ne!(bundle2.cert_pem, bundle.cert_pem);
    assert_eq!(served_leaf(&resolver), leaf_der(&bundle2.cert_pem));

    // Another replica rotated the leaf: we serve theirs.
    let peer = apply_action(
        Some(&SecretData::from(&bundle2)),
        &Action::RotateLeaf {
            reason: Reason::LeafExpiring,
        },
        &sans(),
        at(now, 62),
        &CertOptions::default(),
    )
    .expect("peer rotation");
    loop_.store().put(&peer);
    let picked_up = loop_.tick_at(at(now, 62)).await.expect("pick up");
    assert!(picked_up.swapped && !picked_up.published_ca);
    assert_eq!(served_leaf(&resolver), leaf_der(&peer.cert_pem));

    // Long after: the CA nears its end and the served leaf has expired, so the new CA's
    // leaf is served at once; the old CA stays in the bundle.
    let renewed = loop_.tick_at(at(now, 2_500)).await.expect("new ca");
    assert!(renewed.swapped && renewed.published_ca);
    assert_eq!(publisher.count(), 2);
    let last = publisher
        .published
        .lock()
        .expect("lock")
        .last()
        .cloned()
        .unwrap_or_default();
    assert_eq!(ca_count(&last), 2);
}

/// A self-managed loop over an empty store whose 30-day CA is renewed after day 20, while
/// its (clamped) leaf is still valid.
fn thirty_day_ca(
    resolver: &Arc<CertResolver>,
    publisher: &Publisher,
) -> SelfManaged<MemStore, impl Fn(String) -> std::future::Ready<Result<(), String>> + use<>> {
    let mut cfg = SelfManagedConfig::new("ns", "tls", sans());
    cfg.options.ca_validity = Duration::from_secs(30 * DAY_SECS);
    SelfManaged::new(
        MemStore::default(),
        cfg,
        resolver.clone(),
        metrics(),
        publisher.callback(),
    )
}

#[tokio::test]
async fn a_failed_publish_is_retried_and_the_first_cert_still_served() {
    let now = SystemTime::now();
    let resolver = Arc::new(CertResolver::new());
    let publisher = Publisher::default();
    publisher.fail.store(true, Ordering::SeqCst);
    let mut loop_ = thirty_day_ca(&resolver, &publisher);

    assert!(matches!(
        loop_.tick_at(now).await,
        Err(CertError::PublishCa(_))
    ));
    assert!(
        resolver.is_loaded(),
        "nothing was served before: serve the new cert anyway"
    );

    // A new CA while publishing fails: keep serving the old, still valid leaf.
    let old_leaf = served_leaf(&resolver);
    assert!(loop_.tick_at(at(now, 21)).await.is_err());
    assert_eq!(served_leaf(&resolver), old_leaf);
    assert_eq!(
        ca_count(&loop_.store().bundle().expect("secret").ca_cert_pem),
        2
    );

    publisher.fail.store(false, Ordering::SeqCst);
    let tick = loop_.tick_at(at(now, 21)).await.expect("published");
    assert!(tick.published_ca && !tick.swapped);
    assert_eq!(served_leaf(&resolver), old_leaf);
    let tick = loop_
        .tick_at(at(now, 21) + DEFAULT_CA_SETTLE)
        .await
        .expect("settled");
    assert!(!tick.published_ca && tick.swapped);
    assert_eq!(publisher.count(), 1);
}

#[tokio::test]
async fn a_new_cas_leaf_waits_for_the_apiservers_while_the_old_leaf_is_valid() {
    let now = SystemTime::now();
    let resolver = Arc::new(CertResolver::new());
    let publisher = Publisher::default();
    let mut loop_ = thirty_day_ca(&resolver, &publisher);
    assert!(loop_.tick_at(now).await.expect("first").swapped);
    let old_leaf = served_leaf(&resolver);

    let renewed_at = at(now, 21);
    let renewed = loop_.tick_at(renewed_at).await.expect("new ca");
    assert!(renewed.published_ca && !renewed.swapped);
    assert_eq!(renewed.swap_due_in, Some(DEFAULT_CA_SETTLE));
    assert_eq!(served_leaf(&resolver), old_leaf);

    let early = loop_
        .tick_at(renewed_at + DEFAULT_CA_SETTLE - Duration::from_secs(1))
        .await
        .expect("early");
    assert!(!early.published_ca && !early.swapped);
    assert_eq!(early.swap_due_in, Some(Duration::from_secs(1)));
    assert_eq!(served_leaf(&resolver), old_leaf);

    let settled = loop_
        .tick_at(renewed_at + DEFAULT_CA_SETTLE)
        .await
        .expect("settled");
    assert!(settled.swapped && !settled.published_ca && settled.swap_due_in.is_none());
    let bundle = loop_.store().bundle().expect("secret");
    assert_eq!(served_leaf(&resolver), leaf_der(&bundle.cert_pem));
    assert_eq!(ca_count(&bundle.ca_cert_pem), 2);
    assert_eq!(publisher.count(), 2);
}

#[tokio::test]
async fn run_stops_on_shutdown() {
    let resolver = Arc::new(CertResolver::new());
    let publisher = Publisher::default();
    let mut cfg = SelfManagedConfig::new("ns", "tls", sans());
    cfg.check_interval = Duration::from_secs(3_600);
    let loop_ = SelfManaged::new(
        MemStore::default(),
        cfg,
        resolver.clone(),
        metrics(),
        publisher.callback(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(loop_.run(shutdown.clone()));
    for _ in 0..200 {
        if resolver.is_loaded() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(resolver.is_loaded());
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("cyberdesk-certs-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A temporary directory with `tls.crt`/`tls.key` holding pair `a` of one CA, and pair `b`
/// of the same CA ready to be written over it.
struct OnDisk {
    dir: TempDir,
    cert_path: std::path::PathBuf,
    key_path: std::path::PathBuf,
    ca_cert: String,
    a: (String, String),
    b: (String, String),
}

fn two_pairs_on_disk(name: &str) -> OnDisk {
    let dir = TempDir::new(name);
    let (cert_path, key_path) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    let (ca_cert, ca_key) = generate_ca(DEFAULT_CA_VALIDITY).expect("ca");
    let a = issue_serving(&ca_cert, &ca_key, &sans(), DEFAULT_LEAF_VALIDITY).expect("a");
    let b = issue_serving(&ca_cert, &ca_key, &sans(), DEFAULT_LEAF_VALIDITY).expect("b");
    std::fs::write(&cert_path, &a.0).expect("write");
    std::fs::write(&key_path, &a.1).expect("write");
    OnDisk {
        dir,
        cert_path,
        key_path,
        ca_cert,
        a,
        b,
    }
}

#[tokio::test]
async fn files_mode_reloads_changed_files_and_keeps_the_last_good_pair() {
    let OnDisk {
        dir: _dir,
        cert_path,
        key_path,
        ca_cert,
        a: (cert_a, _),
        b: (cert_b, key_b),
    } = two_pairs_on_disk("files");

    let resolver = Arc::new(CertResolver::new());
    let metrics = metrics();
    let mut files = load_files(&cert_path, &key_path, &resolver, &metrics).expect("load");
    assert_eq!(served_leaf(&resolver), leaf_der(&cert_a));
    assert_eq!(
        metrics.cert_expiry.get(),
        tls::cert_not_after(&cert_a).expect("na") as f64
    );
    assert_eq!(
        files.poll(&resolver, &metrics).await.expect("poll"),
        PollOutcome::Unchanged
    );

    // Half-way through an update: new cert, old key. Refused, the old pair stays.
    std::fs::write(&cert_path, &cert_b).expect("write");
    let err = files.poll(&resolver, &metrics).await.expect_err("mismatch");
    assert!(
        matches!(
            err,
            CertError::LoadFiles {
                source: TlsError::KeyMismatch,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(served_leaf(&resolver), leaf_der(&cert_a));
    assert_eq!(
        files
            .poll(&resolver, &metrics)
            .await
            .expect("same broken pair"),
        PollOutcome::Unchanged
    );

    std::fs::write(&key_path, &key_b).expect("write");
    let outcome = files.poll(&resolver, &metrics).await.expect("reload");
    assert_eq!(
        outcome,
        PollOutcome::Reloaded {
            not_after: tls::cert_not_after(&cert_b).expect("na")
        }
    );
    assert_eq!(served_leaf(&resolver), leaf_der(&cert_b));
    let (peer, _) = handshake(resolver.clone(), &ca_cert, "127.0.0.1").await;
    assert_eq!(peer, leaf_der(&cert_b));

    // A file that vanishes (symlink swap in progress) is an error, not a change.
    std::fs::remove_file(&key_path).expect("remove");
    assert!(matches!(
        files.poll(&resolver, &metrics).await,
        Err(CertError::Io { .. })
    ));
    assert_eq!(served_leaf(&resolver), leaf_der(&cert_b));
}

#[tokio::test]
async fn run_files_picks_up_a_change() {
    let OnDisk {
        dir: _dir,
        cert_path,
        key_path,
        a: _,
        b: (cert_b, key_b),
        ..
    } = two_pairs_on_disk("run");
    let resolver = Arc::new(CertResolver::new());
    let metrics = metrics();
    let files = load_files(&cert_path, &key_path, &resolver, &metrics).expect("load");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_files(
        files,
        resolver.clone(),
        metrics,
        Duration::from_millis(20),
        shutdown.clone(),
    ));

    std::fs::write(&key_path, &key_b).expect("write");
    std::fs::write(&cert_path, &cert_b).expect("write");
    let want = leaf_der(&cert_b);
    for _ in 0..250 {
        if served_leaf(&resolver) == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_leaf(&resolver), want);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[test]
fn load_files_errors_name_the_paths() {
    let dir = TempDir::new("errors");
    let (cert_path, key_path) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    let resolver = CertResolver::new();
    let metrics = metrics();
    let err = load_files(&cert_path, &key_path, &resolver, &metrics).expect_err("missing");
    assert!(err.to_string().contains("tls.crt"), "{err}");

    std::fs::write(&cert_path, "not pem").expect("write");
    std::fs::write(&key_path, "not pem").expect("write");
    let err = load_files(&cert_path, &key_path, &resolver, &metrics).expect_err("garbage");
    let text = err.to_string();
    assert!(
        text.contains("tls.crt") && text.contains("tls.key"),
        "{text}"
    );
    assert!(!resolver.is_loaded());
}

#[test]
fn local_certs_are_written_with_private_keys_owner_only() {
    let dir = TempDir::new("local");
    let out = dir.0.join("webhook-certs");
    let paths = write_local_certs(&out, &["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("write");
    let names: Vec<_> = paths
        .iter()
        .filter_map(|p| p.file_name()?.to_str())
        .collect();
    assert_eq!(names, vec!["ca.crt", "ca.key", "tls.crt", "tls.key"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for path in &paths {
            let mode = std::fs::metadata(path).expect("meta").permissions().mode() & 0o777;
            let private = path.extension().is_some_and(|e| e == "key");
            assert_eq!(
                mode,
                if private { 0o600 } else { 0o644 },
                "{}",
                path.display()
            );
        }
    }
    let read = |name: &str| std::fs::read_to_string(out.join(name)).expect("read");
    let data = SecretData {
        ca_cert_pem: Some(read("ca.crt")),
        ca_key_pem: Some(read("ca.key")),
        cert_pem: Some(read("tls.crt")),
        key_pem: Some(read("tls.key")),
    };
    let wanted = ["localhost".to_string(), "127.0.0.1".to_string()];
    assert_eq!(
        decide(
            Some(&data),
            &wanted,
            SystemTime::now(),
            &CertOptions::default()
        ),
        Action::UseAsIs
    );
    // Writing again over existing files works and keeps the modes.
    write_local_certs(&out, &wanted).expect("rewrite");
}
