//! Self-managed mode's loop: keep the TLS Secret fresh, serve what it holds, and hand a
//! changed CA bundle to whoever puts it into the webhook configurations.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::utils::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::ExponentialBackoff;
use crate::certs::bundle::{CertBundle, CertError, CertOptions, unix};
use crate::certs::store::{Ensured, KubeSecretStore, SecretStore, ensure_trusted};
use crate::certs::tls::{self, CertResolver};
use crate::certs::trust::{self, Anchors};
use crate::metrics::Metrics;

/// Checks are cheap (one GET); a minute keeps a replica at most that far behind a peer's
/// rotation, and each check compares wall-clock time, so a host that slept catches up on
/// its first check after waking.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Apiservers learn a new caBundle through their watch of the webhook configurations, a
/// moment after the write; a leaf of the new CA served before then fails their admissions.
pub const DEFAULT_CA_SETTLE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct SelfManagedConfig {
    pub namespace: String,
    pub secret_name: String,
    /// DNS names and IPs the serving certificate must carry.
    pub sans: Vec<String>,
    pub options: CertOptions,
    pub check_interval: Duration,
    /// How long after publishing a new CA its leaf waits, while the old leaf is still valid.
    pub ca_settle: Duration,
}

impl SelfManagedConfig {
    pub fn new(
        namespace: impl Into<String>,
        secret_name: impl Into<String>,
        sans: Vec<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            secret_name: secret_name.into(),
            sans,
            options: CertOptions::default(),
            check_interval: DEFAULT_CHECK_INTERVAL,
            ca_settle: DEFAULT_CA_SETTLE,
        }
    }
}

/// What one check did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// A different certificate is now served.
    pub swapped: bool,
    /// The CA bundle was handed to `on_new_ca`.
    pub published_ca: bool,
    /// notAfter (Unix seconds) of the certificate being served, if any.
    pub not_after: Option<i64>,
    /// A changed leaf waits this long more for the apiservers to learn its CA.
    pub swap_due_in: Option<Duration>,
}

/// When to serve a changed leaf: `None` now, else how long to wait. With nothing valid
/// served, now; with its CA unpublished, at the next check; with its CA published less
/// than `settle` ago, once `settle` has passed.
fn leaf_wait(
    old_still_valid: bool,
    published_at: Option<SystemTime>,
    now: SystemTime,
    settle: Duration,
    check_interval: Duration,
) -> Option<Duration> {
    if !old_still_valid {
        return None;
    }
    let Some(published_at) = published_at else {
        return Some(check_interval);
    };
    let since = now.duration_since(published_at).unwrap_or_default();
    settle.checked_sub(since).filter(|left| !left.is_zero())
}

struct Loaded {
    fingerprint: u64,
    not_after: i64,
}

fn fingerprint(bundle: &CertBundle) -> u64 {
    let mut h = DefaultHasher::new();
    bundle.cert_pem.hash(&mut h);
    bundle.key_pem.hash(&mut h);
    h.finish()
}

/// Reads what the webhook configurations publish as `caBundle` now (PEM, all of them
/// concatenated): the trust anchor that lives outside the Secret.
pub type PublishedReader =
    Box<dyn Fn() -> BoxFuture<'static, Result<String, String>> + Send + Sync>;

/// One replica's view of the Secret: what it serves and which CA bundle it last published.
pub struct SelfManaged<S, F> {
    store: S,
    cfg: SelfManagedConfig,
    resolver: Arc<CertResolver>,
    metrics: Metrics,
    on_new_ca: F,
    loaded: Option<Loaded>,
    published_ca: Option<String>,
    /// When `published_ca` was written; `None` while the current CA failed to publish.
    published_at: Option<SystemTime>,
    recorder: Option<Recorder>,
    /// `None` when the operator does not manage the webhook configurations.
    read_published: Option<PublishedReader>,
    /// Fingerprints of the CAs this process issued, trusted or published: kept in memory,
    /// where no one who can write the Secret can add to them.
    pinned: BTreeSet<String>,
    /// Unvouched CAs found by the last check, removed if the next check finds them again.
    suspects: BTreeSet<String>,
}

impl<S, F, Fut, E> SelfManaged<S, F>
where
    S: SecretStore,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    pub fn new(
        store: S,
        cfg: SelfManagedConfig,
        resolver: Arc<CertResolver>,
        metrics: Metrics,
        on_new_ca: F,
    ) -> Self {
        Self {
            store,
            cfg,
            resolver,
            metrics,
            on_new_ca,
            loaded: None,
            published_ca: None,
            published_at: None,
            recorder: None,
            read_published: None,
            pinned: BTreeSet::new(),
            suspects: BTreeSet::new(),
        }
    }

    /// Trust only CAs the webhook configurations publish (or this process pinned), not the
    /// Secret's own say: for an operator that puts `caBundle` into them.
    pub fn with_published_reader(mut self, read: PublishedReader) -> Self {
        self.read_published = Some(read);
        self
    }

    /// Publish a Warning event on the Secret when foreign CAs are taken out of it.
    pub fn with_recorder(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
        self
    }

    /// Says what was taken out of `ca.crt`: a log line and, with a recorder, an event.
    /// `version`: the Secret's resourceVersion that held them; it is part of the event's
    /// subject, so each repair is an event of its own with its own fingerprints instead of
    /// one more count on the first.
    async fn report_untrusted(&self, dropped: &[String], version: Option<String>) {
        warn!(
            secret = %self.cfg.secret_name,
            namespace = %self.cfg.namespace,
            fingerprints = %dropped.join(","),
            "removed certificates that are neither published in caBundle nor issued by this replica from ca.crt; they are not published"
        );
        let Some(recorder) = &self.recorder else {
            return;
        };
        let secret = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Secret".into()),
            namespace: Some(self.cfg.namespace.clone()),
            name: Some(self.cfg.secret_name.clone()),
            resource_version: version,
            ..Default::default()
        };
        let note = format!(
            "removed {} certificate(s) the operator did not issue from ca.crt (SHA-256 {}); only CAs already in the webhooks' caBundle or issued by the operator itself are published",
            dropped.len(),
            crate::text::truncate(&dropped.join(", "), 600)
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "UntrustedCaRemoved".into(),
            note: Some(note),
            action: "Repair".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &secret).await {
            warn!(error = %e, "could not publish the UntrustedCaRemoved event");
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub async fn tick(&mut self) -> Result<Tick, CertError> {
        self.tick_at(SystemTime::now()).await
    }

    async fn ensure(
        &self,
        now: SystemTime,
        anchors: &Anchors,
        suspects: &BTreeSet<String>,
    ) -> Result<Ensured, CertError> {
        ensure_trusted(
            &self.store,
            &self.cfg.sans,
            &self.cfg.options,
            now,
            self.published_ca.as_deref(),
            anchors,
            suspects,
        )
        .await
    }

    /// One check: make the Secret right, publish a changed CA bundle, serve its leaf.
    /// The bundle is published first and a leaf of a new CA is served only `ca_settle`
    /// later (while the old leaf is valid), so the apiservers trust it by then (the bundle
    /// keeps the previous CA too, for peers still serving its leaf).
    pub async fn tick_at(&mut self, now: SystemTime) -> Result<Tick, CertError> {
        // Once this replica has pinned CAs, a Secret holding only those needs no look at
        // what the webhook configurations publish: ask only when something is unpinned.
        let pinned_only = match &self.read_published {
            Some(_) if !self.pinned.is_empty() => {
                let anchors = Anchors::new(&self.pinned, Some(&BTreeSet::new()));
                match self.ensure(now, &anchors, &BTreeSet::new()).await {
                    Err(CertError::UnverifiedCa { .. }) => None,
                    other => Some(other),
                }
            }
            _ => None,
        };
        let result = match pinned_only {
            Some(result) => result,
            None => {
                let published = match &self.read_published {
                    Some(read) => Some(trust::fingerprints(
                        &read().await.map_err(CertError::ReadPublished)?,
                    )),
                    None => None,
                };
                let anchors = Anchors::new(&self.pinned, published.as_ref());
                self.ensure(now, &anchors, &self.suspects).await
            }
        };
        let ensured = match result {
            Err(CertError::UnverifiedCa { fingerprints, .. }) => {
                warn!(
                    secret = %self.cfg.secret_name,
                    namespace = %self.cfg.namespace,
                    fingerprints = %fingerprints.join(","),
                    "ca.crt holds CAs that are neither published nor issued by this replica; removing them if they are still unpublished at the next check"
                );
                self.suspects = fingerprints.into_iter().collect();
                return Ok(Tick {
                    not_after: self.loaded.as_ref().map(|l| l.not_after),
                    swap_due_in: Some(self.cfg.ca_settle),
                    ..Tick::default()
                });
            }
            other => other?,
        };
        self.suspects.clear();
        self.pinned
            .extend(trust::fingerprints(&ensured.bundle.ca_cert_pem));
        if !ensured.dropped_cas.is_empty() {
            self.report_untrusted(&ensured.dropped_cas, ensured.dropped_from.clone())
                .await;
        }
        let bundle = ensured.bundle;
        let mut tick = Tick::default();

        let mut publish_error = None;
        if self.published_ca.as_deref() != Some(bundle.ca_cert_pem.as_str()) {
            self.published_at = None;
            match (self.on_new_ca)(bundle.ca_cert_pem.clone()).await {
                Ok(()) => {
                    info!(secret = %self.cfg.secret_name, namespace = %self.cfg.namespace, "CA bundle published");
                    self.published_ca = Some(bundle.ca_cert_pem.clone());
                    self.published_at = Some(now);
                    tick.published_ca = true;
                }
                Err(e) => publish_error = Some(e.to_string()),
            }
        }

        let fp = fingerprint(&bundle);
        let changed = self.loaded.as_ref().is_none_or(|l| l.fingerprint != fp);
        let old_still_valid = self
            .loaded
            .as_ref()
            .is_some_and(|l| l.not_after > unix(now));
        let wait = leaf_wait(
            old_still_valid,
            self.published_at,
            now,
            self.cfg.ca_settle,
            self.cfg.check_interval,
        );
        if changed && wait.is_none() {
            let certified = tls::certified_key_from_pem(&bundle.cert_pem, &bundle.key_pem)?;
            let not_after = tls::cert_not_after(&bundle.cert_pem)?;
            self.resolver.swap(Arc::new(certified));
            self.metrics.cert_expiry.set(not_after as f64);
            self.loaded = Some(Loaded {
                fingerprint: fp,
                not_after,
            });
            tick.swapped = true;
            info!(secret = %self.cfg.secret_name, namespace = %self.cfg.namespace, not_after, "webhook serving certificate loaded");
        } else if changed {
            tick.swap_due_in = wait;
        }
        tick.not_after = self.loaded.as_ref().map(|l| l.not_after);

        match publish_error {
            Some(e) => Err(CertError::PublishCa(e)),
            None => Ok(tick),
        }
    }

    /// Checks every `check_interval` until `shutdown`; a failed check is retried sooner,
    /// backing off from 1 s up to the interval. Never returns early, never panics.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let interval = self.cfg.check_interval.max(MIN_BACKOFF);
        let mut retries = ExponentialBackoff::new(MIN_BACKOFF, interval, Duration::ZERO);
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.tick() => r,
            };
            let wait = match result {
                Ok(tick) => {
                    retries.reset();
                    tick.swap_due_in.map_or(interval, |due| due.min(interval))
                }
                Err(e) => {
                    let wait = retries.next().unwrap_or(interval);
                    warn!(
                        secret = %self.cfg.secret_name,
                        namespace = %self.cfg.namespace,
                        error = %e,
                        retry_in_secs = wait.as_secs(),
                        "webhook certificate check failed"
                    );
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Self-managed mode for the lifetime of the process. `on_new_ca` gets the CA bundle (PEM)
/// at start and whenever it changes, and should put it into both webhook configurations;
/// an error is retried at the next check.
#[allow(clippy::too_many_arguments)]
pub async fn run_self_managed<F, Fut, E>(
    client: Client,
    recorder: Recorder,
    cfg: SelfManagedConfig,
    read_published: Option<PublishedReader>,
    resolver: Arc<CertResolver>,
    metrics: Metrics,
    on_new_ca: F,
    shutdown: CancellationToken,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let store = KubeSecretStore::new(client, &cfg.namespace, &cfg.secret_name);
    let mut this =
        SelfManaged::new(store, cfg, resolver, metrics, on_new_ca).with_recorder(recorder);
    if let Some(read) = read_published {
        this = this.with_published_reader(read);
    }
    this.run(shutdown).await;
}
