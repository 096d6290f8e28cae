//! `cyberdesk-operator run`: wires the servers and the controller to one shutdown signal.
//!
//! Shutdown order: the first signal turns `/readyz` false, waits `--shutdown-delay-secs`
//! so load balancers stop sending new admissions, then stops the servers, which finish the
//! requests already in flight, and exits 0; 1 if anything is still open after
//! `--shutdown-timeout-secs`.

use std::time::Duration;

use kube::Api;
use kube::api::ListParams;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};

use crate::admin;
use crate::admission::Admission;
use crate::admission::authz::SubjectAccessReviewer;
use crate::admission::mutate::MutateConfig;
use crate::admission::scope::ScopeConfig;
use crate::admission::validate::ValidateConfig;
use crate::catalog::{self, Catalog};
use crate::certs::files;
use crate::certs::rotation::{self, SelfManagedConfig};
use crate::certs::tls::{self, CertResolver};
use crate::certs::webhook_config;
use crate::config::RunConfig;
use crate::config::TlsMode;
use crate::controller::{self, ControllerConfig};
use crate::leader::{self, LeaderConfig};
use crate::metrics::Metrics;
use crate::model::Cyberdesk;
use crate::model::cyberdesk::MIN_TIMEOUT_MS;
use crate::model::names;
use crate::policy::PolicyStore;
use crate::policy::watch::{self as policy_watch, PolicySources};
use crate::readiness::Readiness;
use crate::server;

pub const GATE_ADMIN: &str = "admin";
pub const GATE_CACHES: &str = "caches";
pub const GATE_TLS: &str = "tls";
pub const GATE_WEBHOOK: &str = "webhook";

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot configure the Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    KubeConfig(#[source] kube::Error),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    #[error("webhook TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Webhook(#[from] crate::server::ServerError),
    #[error(transparent)]
    Leader(#[from] crate::leader::LeaderError),
    #[error("cannot start the webhook server's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("shutdown did not finish within {0:?}")]
    ShutdownTimeout(Duration),
    #[error(transparent)]
    Notifications(#[from] crate::notify::http::ClientError),
    #[error("configuration: {0}")]
    Config(String),
}

pub async fn run(cfg: RunConfig) -> Result<(), RunError> {
    let signal = crate::shutdown::on_signal().map_err(RunError::Signals)?;
    if let Some(problem) = cfg.namespace_problem() {
        return Err(RunError::Config(problem));
    }
    let notify = cfg.notifier().map_err(RunError::Config)?;
    if notify.any() {
        // The system's TLS roots are read here, so a missing bundle stops the start.
        crate::notify::http::HttpClient::new(notify.attempt_timeout)?;
    }
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::KubeConfig)?;
    let metrics = Metrics::new(&cfg.pod_name, controller::error::ERROR_LABELS)?;
    let readiness = Readiness::default();
    readiness.register(GATE_ADMIN);
    readiness.register(GATE_CACHES);

    // Servers stop on `stop`, which fires only after the shutdown delay.
    let stop = CancellationToken::new();
    let app = admin::router(metrics.clone(), readiness.clone());
    let (admin_addr, admin_server) = admin::bind(cfg.admin_addr, app, stop.clone()).await?;
    let admin_task = tokio::spawn(admin_server);
    readiness.open(GATE_ADMIN);
    tracing::info!(addr = %admin_addr, "admin server listening");

    let cache_task = tokio::spawn(sync_caches(client.clone(), readiness.clone(), stop.clone()));
    // Ends with `stop`; nothing waits for it.
    tokio::spawn(crate::heap::trim_periodically(stop.clone()));
    // One watch of the template ConfigMaps, for the webhook and (on the leader) the controller.
    readiness.register(catalog::GATE_TEMPLATES);
    let gate = readiness.clone();
    let (templates, templates_task) = catalog::start(
        client.clone(),
        &cfg.namespace,
        &cfg.template_configmap,
        move || gate.open(catalog::GATE_TEMPLATES),
        stop.clone(),
    );
    let (mut webhook_tasks, webhook_server) =
        start_webhooks(&cfg, &client, &metrics, &readiness, &templates, &stop).await?;
    webhook_tasks.push(templates_task);
    // The controller stops at the first signal (not after the endpoint delay), so the Lease
    // is released and a peer takes over as soon as in-flight reconciles are done.
    let controller_task = tokio::spawn(run_controller(
        client.clone(),
        cfg.clone(),
        notify,
        templates,
        metrics.clone(),
        signal.clone(),
    ));

    let mut controller_task = controller_task;
    // Biased: the controller also ends on the signal, and when both are ready at once (a
    // loaded machine polls late) the signal must win, or the shutdown delay is skipped.
    let leader_failed = tokio::select! {
        biased;
        _ = signal.cancelled() => None,
        ended = &mut controller_task => Some(ended),
    };
    if let Some(ended) = leader_failed {
        // Losing the Lease (or failing to set it up) ends the process: no half-leader.
        readiness.begin_shutdown();
        stop.cancel();
        let _ = tokio::time::timeout(cfg.shutdown_timeout(), admin_task).await;
        return match ended {
            Ok(Err(e)) => Err(RunError::Leader(e)),
            _ => Ok(()),
        };
    }
    readiness.begin_shutdown();
    tracing::info!(delay_secs = cfg.shutdown_delay_secs, "not ready; draining");
    tokio::time::sleep(Duration::from_secs(cfg.shutdown_delay_secs)).await;
    stop.cancel();

    let timeout = cfg.shutdown_timeout();
    let drained = tokio::time::timeout(timeout, async {
        if let Ok(Err(e)) = admin_task.await {
            tracing::warn!(error = %e, "admin server ended with an error");
        }
        tracing::debug!("admin server stopped");
        let _ = cache_task.await;
        tracing::debug!("cache watch stopped");
        for (i, task) in webhook_tasks.into_iter().enumerate() {
            let _ = task.await;
            tracing::debug!(task = i, "webhook task stopped");
        }
        if let Ok(Err(e)) = controller_task.await {
            tracing::warn!(error = %e, "controller ended with an error");
        }
        // The server gives up on open connections at the same deadline; giving up is not
        // a clean drain, however the race between the two timers ends.
        webhook_server.await.unwrap_or(server::Drain::Abandoned)
    })
    .await;
    match drained {
        Ok(server::Drain::Complete) => {
            tracing::info!("shutdown complete");
            Ok(())
        }
        Ok(server::Drain::Abandoned) | Err(_) => Err(RunError::ShutdownTimeout(timeout)),
    }
}

/// TLS, policies and the HTTPS server: everything the webhooks need, on every replica.
async fn start_webhooks(
    cfg: &RunConfig,
    client: &kube::Client,
    metrics: &Metrics,
    readiness: &Readiness,
    templates: &Catalog,
    stop: &CancellationToken,
) -> Result<(Vec<JoinHandle<()>>, JoinHandle<server::Drain>), RunError> {
    readiness.register(GATE_TLS);
    readiness.register(GATE_WEBHOOK);
    readiness.register(policy_watch::GATE_POLICIES);
    let resolver = Arc::new(CertResolver::new());
    let mut tasks = match cfg.tls_mode {
        TlsMode::Files => {
            vec![start_files_tls(cfg, client, metrics, readiness, &resolver, stop).await?]
        }
        TlsMode::SelfManaged => {
            start_self_managed_tls(cfg, client, metrics, readiness, &resolver, stop)
        }
    };
    let (policies, policy_task) = start_policies(cfg, client, metrics, readiness, stop);
    tasks.push(policy_task);
    let admission = admission(cfg, client, metrics, templates, policies);
    let server_task = serve_webhooks(cfg, resolver, admission, metrics, readiness, stop)?;
    Ok((tasks, server_task))
}

/// Events as the operator's field manager, from this pod.
fn recorder(cfg: &RunConfig, client: &kube::Client) -> Recorder {
    Recorder::new(
        client.clone(),
        Reporter {
            controller: names::FIELD_MANAGER.into(),
            instance: Some(cfg.pod_name.clone()),
        },
    )
}

/// Files mode: serve the mounted files (reloaded when they change) and, when managing the
/// webhook configurations, put the `ca.crt` beside them into their `caBundle` once.
async fn start_files_tls(
    cfg: &RunConfig,
    client: &kube::Client,
    metrics: &Metrics,
    readiness: &Readiness,
    resolver: &Arc<CertResolver>,
    stop: &CancellationToken,
) -> Result<JoinHandle<()>, RunError> {
    let files = files::load_files(&cfg.tls_cert_file, &cfg.tls_key_file, resolver, metrics)
        .map_err(|e| RunError::Tls(e.to_string()))?;
    let ca_file = cfg.tls_cert_file.with_file_name("ca.crt");
    if cfg.manage_webhook_config
        && let Ok(ca) = std::fs::read_to_string(&ca_file)
    {
        webhook_config::apply_ca_bundle(client, &ca)
            .await
            .map_err(|e| {
                RunError::Tls(format!(
                    "registering the webhooks with {}: {e}",
                    ca_file.display()
                ))
            })?;
    }
    readiness.open(GATE_TLS);
    Ok(tokio::spawn(files::run_files(
        files,
        resolver.clone(),
        metrics.clone(),
        files::DEFAULT_POLL_INTERVAL,
        stop.clone(),
    )))
}

/// The rotation settings `run`'s flags give.
fn self_managed_config(cfg: &RunConfig) -> SelfManagedConfig {
    let mut this = SelfManagedConfig::new(&cfg.namespace, &cfg.tls_secret, cfg.service_dns_names());
    this.check_interval = Duration::from_secs(cfg.cert_check_interval_secs.max(1));
    this
}

/// Self-managed mode: the rotation loop (CA and leaf in the Secret, the CA bundle into the
/// webhook configurations) and the task opening the TLS gate once a certificate is served.
fn start_self_managed_tls(
    cfg: &RunConfig,
    client: &kube::Client,
    metrics: &Metrics,
    readiness: &Readiness,
    resolver: &Arc<CertResolver>,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let manage = cfg.manage_webhook_config;
    let apply_client = client.clone();
    let on_new_ca = move |ca: String| {
        let client = apply_client.clone();
        async move {
            if manage {
                webhook_config::apply_ca_bundle(&client, &ca).await?;
                tracing::info!("webhook configurations carry the current CA bundle");
            }
            Ok::<(), webhook_config::ConfigurationError>(())
        }
    };
    // The CAs the webhook configurations publish are the trust anchor for the Secret's
    // ca.crt (see certs::trust); unmanaged configurations publish nothing.
    let read_client = client.clone();
    let read_published = manage.then(|| -> rotation::PublishedReader {
        Box::new(move || {
            let client = read_client.clone();
            Box::pin(async move {
                webhook_config::published_ca_bundles(&client)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    });
    let rotation_task = tokio::spawn(rotation::run_self_managed(
        client.clone(),
        recorder(cfg, client),
        self_managed_config(cfg),
        read_published,
        resolver.clone(),
        metrics.clone(),
        on_new_ca,
        stop.clone(),
    ));
    let (gate_resolver, gate_readiness, gate_stop) =
        (resolver.clone(), readiness.clone(), stop.clone());
    let gate_task = tokio::spawn(async move {
        while !gate_resolver.is_loaded() {
            tokio::select! {
                _ = gate_stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        gate_readiness.open(GATE_TLS);
    });
    vec![rotation_task, gate_task]
}

/// The policy set (files and the ConfigMap), followed until `stop`; the policies gate opens
/// with the first set that loads.
fn start_policies(
    cfg: &RunConfig,
    client: &kube::Client,
    metrics: &Metrics,
    readiness: &Readiness,
    stop: &CancellationToken,
) -> (PolicyStore, JoinHandle<()>) {
    let store = PolicyStore::default();
    let sources = PolicySources {
        dir: cfg.policy_dir.clone(),
        namespace: cfg.namespace.clone(),
        configmap: cfg.policy_configmap.clone(),
    };
    let gate = readiness.clone();
    let task = tokio::spawn(policy_watch::run(
        client.clone(),
        sources,
        store.clone(),
        metrics.clone(),
        move || gate.open(policy_watch::GATE_POLICIES),
        recorder(cfg, client),
        stop.clone(),
    ));
    (store, task)
}

/// What the webhooks decide with: the flags' limits, the policies, the templates and the
/// Secret access checks.
fn admission(
    cfg: &RunConfig,
    client: &kube::Client,
    metrics: &Metrics,
    templates: &Catalog,
    policies: PolicyStore,
) -> Arc<Admission> {
    Arc::new(Admission {
        mutate: MutateConfig {
            default_timeout_ms: cfg.default_timeout_ms,
        },
        validate: ValidateConfig {
            min_timeout_ms: MIN_TIMEOUT_MS,
            max_timeout_ms: cfg.max_timeout_ms,
            vm_name_prefix: cfg.vm_name_prefix.clone(),
        },
        scope: ScopeConfig {
            desk_namespaces: cfg.desk_namespaces(),
            max_metadata_bytes: cfg.max_metadata_bytes,
        },
        policies,
        metrics: metrics.clone(),
        templates: templates.clone(),
        secret_access: Arc::new(
            SubjectAccessReviewer::new(
                client.clone(),
                Duration::from_millis(cfg.access_review_timeout_ms),
                Duration::from_secs(cfg.access_review_cache_secs),
                metrics.clone(),
            )
            .with_rate_limit(cfg.access_review_rate, cfg.access_review_burst),
        ),
        operator_username: cfg.operator_username(),
    })
}

/// Binds the webhook port and serves HTTPS on the server's own runtime until `stop`.
fn serve_webhooks(
    cfg: &RunConfig,
    resolver: Arc<CertResolver>,
    admission: Arc<Admission>,
    metrics: &Metrics,
    readiness: &Readiness,
    stop: &CancellationToken,
) -> Result<JoinHandle<server::Drain>, RunError> {
    let client_ca = match &cfg.webhook_client_ca {
        Some(path) => Some(tls::client_roots(path).map_err(|e| RunError::Tls(e.to_string()))?),
        None => None,
    };
    let tls_config = tls::server_config_for_clients(resolver, client_ca)
        .map_err(|e| RunError::Tls(e.to_string()))?;
    let listener = server::bind_std(cfg.webhook_addr)?;
    let webhook_runtime = server::own_runtime().map_err(RunError::Runtime)?;
    tracing::info!(addr = %cfg.webhook_addr, mode = ?cfg.tls_mode, "webhook server listening");
    readiness.open(GATE_WEBHOOK);
    let limits = cfg.server_limits();
    let app = server::router_with_budget(
        admission,
        server::budget::MemoryBudget::new(cfg.webhook_memory_budget()),
    );
    let (metrics, stop, drain) = (metrics.clone(), stop.clone(), cfg.shutdown_timeout());
    Ok(tokio::task::spawn_blocking(move || {
        webhook_runtime.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    server::serve(
                        listener,
                        Arc::new(tls_config),
                        app,
                        limits,
                        metrics,
                        stop,
                        drain,
                    )
                    .await
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the webhook listener");
                    server::Drain::Complete
                }
            }
        })
    }))
}

/// The controller, on the leader only (or always, with leader election off). Returns
/// when `stop` fires, or with an error when the Lease is lost.
async fn run_controller(
    client: kube::Client,
    cfg: RunConfig,
    notify: crate::notify::NotifierConfig,
    templates: Catalog,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), crate::leader::LeaderError> {
    let controller_cfg = ControllerConfig {
        default_timeout_ms: cfg.default_timeout_ms,
        max_concurrent_reconciles: cfg.max_concurrent_reconciles,
        initial_list: cfg.initial_list,
        placement: cfg.placement(),
        orphan_grace: Duration::from_secs(cfg.orphan_grace_secs),
        legacy_status: cfg.legacy_status,
        desk_namespaces: cfg.desk_namespaces(),
        notify,
    };
    let identity = cfg.pod_name.clone();
    if !cfg.leader_election {
        metrics.leader.with_label_values(&[&identity]).set(1);
        controller::run(client, controller_cfg, templates, metrics, identity, stop).await;
        return Ok(());
    }
    let leader_cfg = LeaderConfig {
        namespace: cfg.namespace.clone(),
        lease_name: cfg.lease_name.clone(),
        identity: identity.clone(),
        duration_secs: cfg.lease_duration_secs,
        renew_every_secs: cfg.lease_renew_secs,
    };
    let lead_client = client.clone();
    let lead_metrics = metrics.clone();
    leader::run(client, leader_cfg, metrics, stop, move |leader_stop| {
        controller::run(
            lead_client.clone(),
            controller_cfg.clone(),
            templates.clone(),
            lead_metrics.clone(),
            identity.clone(),
            leader_stop,
        )
    })
    .await
}

/// Opens the caches gate once Cyberdesks can be listed cluster-wide (CRD installed, RBAC
/// right, apiserver reachable); retried with backoff until then. A one-item list is enough:
/// the controller keeps its own caches on the leader, and holding a second copy of every
/// Cyberdesk on every replica just for readiness would cost memory for nothing.
async fn sync_caches(client: kube::Client, readiness: Readiness, stop: CancellationToken) {
    let api: Api<Cyberdesk> = Api::all(client);
    let mut backoff = crate::backoff::watch_backoff();
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => {
                readiness.open(GATE_CACHES);
                tracing::info!("Cyberdesk API readable");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot list Cyberdesks yet; retrying"),
        }
        let wait = backoff.next().unwrap_or(Duration::from_secs(5));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
