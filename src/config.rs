//! Every setting of `cyberdesk-operator run`: a flag, with an environment variable as
//! fallback (documented in `--help` and the README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, ValueEnum};

use crate::model::cyberdesk::DEFAULT_TIMEOUT_MS;
use crate::model::names;

/// How the webhook server gets its serving certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// Generate a CA and leaf with rcgen, keep them in the TLS Secret, rotate them before
    /// expiry and inject the CA into both webhook configurations.
    SelfManaged,
    /// Serve mounted tls.crt/tls.key (cert-manager or `make certs`), reloaded on change.
    Files,
}

pub use crate::controller::initial_list::InitialList;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Clone, Debug)]
pub struct RunConfig {
    /// Namespace the operator runs in: Lease, TLS Secret, VM template and policy ConfigMaps live here.
    #[arg(long, env = "CYBERDESK_NAMESPACE", default_value = names::DEFAULT_NAMESPACE)]
    pub namespace: String,

    /// This replica's identity for leader election and metrics (the pod name in a cluster).
    #[arg(long, env = "POD_NAME", default_value = "cyberdesk-operator-local")]
    pub pod_name: String,

    /// Address of the HTTPS admission webhook server.
    #[arg(long, env = "CYBERDESK_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,

    /// Address of the plain-HTTP admin server (/metrics, /healthz, /readyz).
    #[arg(long, env = "CYBERDESK_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: SocketAddr,

    /// Where the webhook serving certificate comes from.
    #[arg(
        long,
        env = "CYBERDESK_TLS_MODE",
        value_enum,
        default_value = "self-managed"
    )]
    pub tls_mode: TlsMode,

    /// Serving certificate (PEM) for --tls-mode files.
    #[arg(
        long,
        env = "CYBERDESK_TLS_CERT_FILE",
        default_value = "/etc/cyberdesk/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// Private key (PEM) for --tls-mode files.
    #[arg(
        long,
        env = "CYBERDESK_TLS_KEY_FILE",
        default_value = "/etc/cyberdesk/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// Secret that holds the self-managed CA and serving certificate.
    #[arg(long, env = "CYBERDESK_TLS_SECRET", default_value = names::TLS_SECRET)]
    pub tls_secret: String,

    /// Service in front of the webhook server; its DNS names go into the certificate.
    #[arg(long, env = "CYBERDESK_SERVICE_NAME", default_value = names::SERVICE_NAME)]
    pub service_name: String,

    /// Extra DNS names or IP addresses for the serving certificate (repeat or comma-separate).
    #[arg(
        long = "extra-san",
        env = "CYBERDESK_EXTRA_SANS",
        value_delimiter = ','
    )]
    pub extra_sans: Vec<String>,

    /// How often the self-managed certificate is checked for expiry and for a peer's rotation.
    #[arg(long, env = "CYBERDESK_CERT_CHECK_INTERVAL_SECS", default_value_t = 60)]
    pub cert_check_interval_secs: u64,

    /// Put the CA bundle into both (existing) webhook configurations by server-side apply of
    /// the caBundle fields alone; every other field stays as the manifests or an admin set it.
    #[arg(long, env = "CYBERDESK_MANAGE_WEBHOOK_CONFIG", default_value_t = true, action = ArgAction::Set)]
    pub manage_webhook_config: bool,

    /// spec.timeoutMs given to a Cyberdesk that does not set one.
    #[arg(long, env = "CYBERDESK_DEFAULT_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS)]
    pub default_timeout_ms: i64,

    /// Desks reconciled at once (controller-runtime's MaxConcurrentReconciles). Higher lets
    /// more timeouts and starts be in flight when many fall due together; each pass in
    /// flight holds at most one request to the apiserver.
    #[arg(
        long,
        env = "CYBERDESK_MAX_CONCURRENT_RECONCILES",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub max_concurrent_reconciles: u16,

    /// How the desk, VM, VMI and pool caches fill when their watches start: `stream` has the
    /// apiserver send the objects one at a time (WatchList; far less memory than pages of a
    /// LIST), `list` reads pages, `auto` streams when the apiserver accepts it at start.
    #[arg(long, env = "CYBERDESK_INITIAL_LIST", value_enum, default_value_t = InitialList::Auto)]
    pub initial_list: InitialList,

    /// One namespace for every desk's VM (the platform's layout: kubevirt). Unset or empty,
    /// each VM lives beside its desk. A VM in another namespace than its desk cannot carry an
    /// ownerReference: its labels record the desk, and the orphan sweep deletes it once the
    /// desk is gone. The VM and VMI watches are then limited to this namespace.
    #[arg(long, env = "CYBERDESK_VM_NAMESPACE", value_parser = parse_namespace)]
    pub vm_namespace: Option<String>,

    /// Put before a desk's name to name its VM and VMI; may be empty (`--vm-name-prefix=`
    /// or an empty variable), then the VM has the desk's name. Desk names are limited to 63
    /// minus its length, and never more than 53 (the CRD's own rule).
    #[arg(
        long,
        env = "CYBERDESK_VM_NAME_PREFIX",
        default_value = names::VM_PREFIX,
        value_parser = parse_prefix
    )]
    pub vm_name_prefix: String,

    /// With --vm-namespace: how long a managed VM whose desk is gone stays before the
    /// orphan sweep (leader only) deletes it.
    #[arg(long, env = "CYBERDESK_ORPHAN_GRACE_SECS", default_value_t = 300)]
    pub orphan_grace_secs: u64,

    /// Also keep the previous operator's status block, status.cyberdesk_create
    /// {virtualMachineRef, startTime, expiryTime, lastPhase}, in step (for clients that
    /// still read it, such as the platform's gateway).
    #[arg(long, env = "CYBERDESK_LEGACY_STATUS", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub legacy_status: bool,

    /// POSTed once when a desk first runs and is ready (its VMI's Ready condition is True),
    /// e.g. http://gateway.cyberdesk-system.svc.cluster.local/cyberdesk/{name}/ready;
    /// {name} and {namespace} are the desk's. Retried with backoff; the outcome is recorded
    /// in status.notifications.ready. Unset: no call.
    #[arg(long, env = "CYBERDESK_READY_URL", value_parser = parse_ready_url)]
    pub ready_url: Option<crate::notify::ready::ReadyUrl>,

    /// The platform's Supabase project (e.g. https://<project>.supabase.co). With
    /// SUPABASE_KEY, each desk's state (pending, terminated, error) is written to its row of
    /// table cyberdesk_instances whenever it changes. In a cluster both come from a Secret
    /// (envFrom), locally from .env.
    #[arg(long, env = "SUPABASE_URL")]
    pub supabase_url: Option<String>,

    /// The Supabase service key for SUPABASE_URL. Prefer the variable to the flag (a flag
    /// shows in the process list); the key is never logged.
    #[arg(long, env = "SUPABASE_KEY", hide_env_values = true)]
    pub supabase_key: Option<crate::notify::supabase::SecretKey>,

    /// Longest time one notification attempt (connect, request, answer) may take.
    #[arg(long, env = "CYBERDESK_NOTIFY_TIMEOUT_SECS", default_value_t = 5)]
    pub notify_timeout_secs: u64,

    /// Attempts per notification, the first included; waits double from 1 s to 60 s in
    /// between. After the last failed attempt: a Warning event, and no more tries.
    #[arg(long, env = "CYBERDESK_NOTIFY_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub notify_max_attempts: u32,

    /// Namespaces whose desks the operator serves (comma list); unset or empty, every
    /// namespace. The validating webhook denies a desk elsewhere, and the reconciler only
    /// reports on it: no VM, no adoption, no notification. Desks are adopted from the
    /// previous operator only when this is set, and only in these namespaces. Must name
    /// exactly one namespace with --vm-namespace, with SUPABASE_URL, or with a --ready-url
    /// without {namespace}: there a desk is known by its name alone.
    #[arg(
        long,
        env = "CYBERDESK_DESK_NAMESPACES",
        value_delimiter = ',',
        value_parser = parse_namespace
    )]
    pub desk_namespaces: Vec<String>,

    /// Most bytes (keys and values) a desk's or a pool's labels and annotations may take
    /// together; the validating webhook denies more. Every label of a desk would otherwise
    /// be held in the leader's memory and nothing in Kubernetes limits their number.
    #[arg(
        long,
        env = "CYBERDESK_MAX_METADATA_BYTES",
        default_value_t = crate::admission::scope::DEFAULT_MAX_METADATA_BYTES
    )]
    pub max_metadata_bytes: usize,

    /// Largest spec.timeoutMs the validating webhook accepts (policies may set a lower ceiling).
    #[arg(long, env = "CYBERDESK_MAX_TIMEOUT_MS", default_value_t = 30 * 24 * 3_600_000)]
    pub max_timeout_ms: i64,

    /// Folder of JSON Schema policy files (*.json); a missing folder means no file policies.
    #[arg(
        long,
        env = "CYBERDESK_POLICY_DIR",
        default_value = "/etc/cyberdesk/policies"
    )]
    pub policy_dir: PathBuf,

    /// ConfigMap in --namespace whose *.json keys are policies, watched and hot-reloaded.
    #[arg(long, env = "CYBERDESK_POLICY_CONFIGMAP", default_value = names::POLICIES_CONFIGMAP)]
    pub policy_configmap: String,

    /// ConfigMap in --namespace (key template.yaml, label cyberdesk.io/template=true) with
    /// the default VM template; the built-in template when it does not exist or lacks the label.
    #[arg(long, env = "CYBERDESK_TEMPLATE_CONFIGMAP", default_value = names::TEMPLATE_CONFIGMAP)]
    pub template_configmap: String,

    /// Webhook server: longest time from the first byte of a request (for a connection's
    /// first request, from the end of the TLS handshake) to its last header; slower clients
    /// are disconnected.
    #[arg(
        long,
        env = "CYBERDESK_WEBHOOK_HEADER_TIMEOUT_SECS",
        default_value_t = 5
    )]
    pub webhook_header_timeout_secs: u64,

    /// Webhook server: how long a keep-alive connection may wait for its next request.
    #[arg(
        long,
        env = "CYBERDESK_WEBHOOK_IDLE_TIMEOUT_SECS",
        default_value_t = 60
    )]
    pub webhook_idle_timeout_secs: u64,

    /// Webhook server: longest time from a request's last header to its answer (body read and
    /// review); the connection is closed after it.
    #[arg(
        long,
        env = "CYBERDESK_WEBHOOK_REQUEST_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub webhook_request_timeout_secs: u64,

    /// Webhook server: most connections open at once; more are closed as they arrive.
    #[arg(
        long,
        env = "CYBERDESK_WEBHOOK_MAX_CONNECTIONS",
        default_value_t = 1024
    )]
    pub webhook_max_connections: usize,

    /// Webhook server: most connections open at once from one source address; more from it
    /// are closed as they arrive, so one client cannot take every connection.
    #[arg(
        long,
        env = "CYBERDESK_WEBHOOK_MAX_CONNECTIONS_PER_SOURCE",
        default_value_t = 256
    )]
    pub webhook_max_connections_per_source: usize,

    /// Webhook server: memory, in MiB, that the bodies of all requests in flight and their
    /// parsed reviews may hold together (a review is charged an estimate of its parse before
    /// it is parsed). A request that does not fit is answered 503 with Retry-After at once;
    /// one that could never fit (more than three quarters of it) 413.
    #[arg(
        long,
        env = "CYBERDESK_WEBHOOK_MEMORY_BUDGET_MIB",
        default_value_t = 32,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub webhook_memory_budget_mib: u32,

    /// Webhook server: require a client certificate signed by a CA in this PEM file (the
    /// apiserver's, configured in its AdmissionConfiguration). Unset: no client certificate
    /// is asked for. Read at start.
    #[arg(long, env = "CYBERDESK_WEBHOOK_CLIENT_CA")]
    pub webhook_client_ca: Option<PathBuf>,

    /// SubjectAccessReviews per second that may miss the cache, on average; past the burst
    /// and this rate, a check is not asked and the desk is denied with a message saying so.
    /// 0 turns the limit off.
    #[arg(long, env = "CYBERDESK_ACCESS_REVIEW_RATE", default_value_t = 20)]
    pub access_review_rate: u32,

    /// SubjectAccessReviews that may miss the cache at once before --access-review-rate applies.
    #[arg(long, env = "CYBERDESK_ACCESS_REVIEW_BURST", default_value_t = 100)]
    pub access_review_burst: u32,

    /// The operator's ServiceAccount (in --namespace): its own updates of a Cyberdesk
    /// (finalizer, status) are never judged by policies.
    #[arg(long, env = "CYBERDESK_SERVICE_ACCOUNT", default_value = names::SERVICE_ACCOUNT)]
    pub service_account: String,

    /// Longest wait for the SubjectAccessReview that checks a requester may read the
    /// user-data Secret their desk names; no answer in time denies the desk.
    #[arg(
        long,
        env = "CYBERDESK_ACCESS_REVIEW_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub access_review_timeout_ms: u64,

    /// How long a SubjectAccessReview answer is reused for the same identity (user, uid,
    /// groups, extra) and Secret (0 turns the cache off).
    #[arg(long, env = "CYBERDESK_ACCESS_REVIEW_CACHE_SECS", default_value_t = 5)]
    pub access_review_cache_secs: u64,

    /// Run the reconciler only while holding the Lease (turn off only for a single replica).
    #[arg(long, env = "CYBERDESK_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease in --namespace.
    #[arg(long, env = "CYBERDESK_LEASE_NAME", default_value = names::LEASE_NAME)]
    pub lease_name: String,

    /// How long a Lease stays valid without renewal, in seconds.
    #[arg(long, env = "CYBERDESK_LEASE_DURATION_SECS", default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// How often the leader renews, in seconds.
    #[arg(long, env = "CYBERDESK_LEASE_RENEW_SECS", default_value_t = 2)]
    pub lease_renew_secs: u64,

    /// Seconds between turning /readyz false on SIGTERM and closing the listeners, so
    /// endpoints stop routing admissions here before the server goes away.
    #[arg(long, env = "CYBERDESK_SHUTDOWN_DELAY_SECS", default_value_t = 2)]
    pub shutdown_delay_secs: u64,

    /// Longest time to drain in-flight work on SIGTERM before exiting.
    #[arg(long, env = "CYBERDESK_SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,

    /// Log format (RUST_LOG sets the filter, default info).
    #[arg(long, env = "CYBERDESK_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

pub(crate) fn parse_ready_url(value: &str) -> Result<crate::notify::ready::ReadyUrl, String> {
    crate::notify::ready::ReadyUrl::parse(value)
}

/// An empty value (an empty variable in an env file) means no VM namespace.
pub(crate) fn parse_namespace(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Ok(String::new());
    }
    match crate::model::placement::namespace_problem(value) {
        None => Ok(value.to_string()),
        Some(problem) => Err(problem),
    }
}

pub(crate) fn parse_prefix(value: &str) -> Result<String, String> {
    match crate::model::placement::prefix_problem(value) {
        None => Ok(value.to_string()),
        Some(problem) => Err(problem),
    }
}

impl RunConfig {
    /// Where VMs live and how they are named, from the flags.
    pub fn placement(&self) -> crate::model::Placement {
        crate::model::Placement {
            namespace: self.vm_namespace.clone().filter(|ns| !ns.is_empty()),
            prefix: self.vm_name_prefix.clone(),
        }
    }

    /// The namespaces desks are served in (`--desk-namespaces`).
    pub fn desk_namespaces(&self) -> crate::model::DeskNamespaces {
        crate::model::DeskNamespaces::new(self.desk_namespaces.iter().cloned())
    }

    /// Why the namespace settings cannot work together, if they cannot: a VM namespace or
    /// a platform record keyed by the desk name needs exactly one desk namespace.
    pub fn namespace_problem(&self) -> Option<String> {
        let supabase = self.supabase_url.as_deref().is_some_and(|u| !u.is_empty());
        let ready_by_name = self
            .ready_url
            .as_ref()
            .is_some_and(crate::notify::ready::ReadyUrl::keyed_by_name);
        self.desk_namespaces().problem(
            self.placement().namespace.is_some(),
            supabase || ready_by_name,
        )
    }

    /// The notifier's settings from the flags; an error names a setting that is wrong.
    pub fn notifier(&self) -> Result<crate::notify::NotifierConfig, String> {
        let supabase = match (self.supabase_url.as_deref(), &self.supabase_key) {
            (None | Some(""), None) => None,
            (Some(url), Some(key)) if !url.is_empty() => {
                Some(crate::notify::supabase::Supabase::new(url, key.clone())?)
            }
            _ => return Err("set both SUPABASE_URL and SUPABASE_KEY, or neither".into()),
        };
        Ok(crate::notify::NotifierConfig {
            ready_url: self.ready_url.clone(),
            supabase,
            retry: crate::notify::retry::RetryPolicy {
                first_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                max_attempts: self.notify_max_attempts,
            },
            attempt_timeout: Duration::from_secs(self.notify_timeout_secs.max(1)),
            namespaces: self.desk_namespaces(),
        })
    }

    /// The webhook server's limits from the flags.
    pub fn server_limits(&self) -> crate::server::ServerLimits {
        crate::server::ServerLimits {
            header_read_timeout: Duration::from_secs(self.webhook_header_timeout_secs.max(1)),
            idle_timeout: Duration::from_secs(self.webhook_idle_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(self.webhook_request_timeout_secs.max(1)),
            max_connections: self.webhook_max_connections.max(1),
            max_connections_per_source: self.webhook_max_connections_per_source.max(1),
            ..Default::default()
        }
    }

    /// The webhook server's memory budget in bytes.
    pub fn webhook_memory_budget(&self) -> usize {
        self.webhook_memory_budget_mib as usize * 1024 * 1024
    }

    /// The user name the apiserver gives the operator's ServiceAccount.
    pub fn operator_username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// DNS names the webhook serving certificate must carry.
    pub fn service_dns_names(&self) -> Vec<String> {
        let svc = &self.service_name;
        let ns = &self.namespace;
        let mut names = vec![
            format!("{svc}.{ns}.svc"),
            format!("{svc}.{ns}.svc.cluster.local"),
            format!("{svc}.{ns}"),
            svc.clone(),
        ];
        names.extend(self.extra_sans.iter().filter(|s| !s.is_empty()).cloned());
        names
    }
}

impl RunConfig {
    /// The configuration `run` gets with no flags: defaults and environment only.
    pub fn parse_default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            run: RunConfig,
        }
        Only::parse_from(["cyberdesk-operator"]).run
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        run: RunConfig,
    }

    #[test]
    fn defaults_match_the_design() {
        let cfg = Wrapper::parse_from(["x"]).run;
        assert_eq!(cfg.webhook_addr.port(), 8443);
        assert_eq!(cfg.admin_addr.port(), 8081);
        assert_eq!(cfg.default_timeout_ms, 3_600_000);
        assert_eq!(cfg.lease_duration_secs, 15);
        assert!(cfg.manage_webhook_config);
        assert_eq!(cfg.placement(), crate::model::Placement::default());
    }

    #[test]
    fn env_example_lists_every_variable() {
        use clap::CommandFactory;
        let example = include_str!("../.env.example");
        let command = Wrapper::command();
        let missing: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .filter(|env| !example.contains(&format!("\n#{env}=")))
            .collect();
        assert!(missing.is_empty(), ".env.example lacks {missing:?}");
    }

    #[test]
    fn the_platform_layout_parses_and_bad_names_are_refused() {
        let cfg = Wrapper::parse_from(["x", "--vm-namespace=kubevirt", "--vm-name-prefix="]).run;
        let placement = cfg.placement();
        assert_eq!(placement.namespace.as_deref(), Some("kubevirt"));
        assert_eq!(placement.prefix, "");
        assert!(Wrapper::try_parse_from(["x", "--vm-namespace=Kube_Virt"]).is_err());
        let unset = Wrapper::parse_from(["x", "--vm-namespace="]).run;
        assert_eq!(unset.placement().namespace, None);
        assert!(Wrapper::try_parse_from(["x", "--vm-name-prefix=VM-"]).is_err());
    }

    #[test]
    fn the_platform_layout_needs_exactly_one_desk_namespace() {
        let shared = Wrapper::parse_from(["x", "--vm-namespace=kubevirt"]).run;
        assert!(shared.namespace_problem().is_some());
        let one = Wrapper::parse_from([
            "x",
            "--vm-namespace=kubevirt",
            "--desk-namespaces=cyberdesk-system",
        ])
        .run;
        assert_eq!(one.namespace_problem(), None);
        assert!(one.desk_namespaces().serves("cyberdesk-system"));
        assert!(!one.desk_namespaces().serves("team-a"));
        let by_name = Wrapper::parse_from(["x", "--ready-url=http://g/{name}/ready"]).run;
        assert!(by_name.namespace_problem().is_some());
        let by_both =
            Wrapper::parse_from(["x", "--ready-url=http://g/{namespace}/{name}/ready"]).run;
        assert_eq!(by_both.namespace_problem(), None);
        let many = Wrapper::parse_from(["x", "--desk-namespaces=a,b"]).run;
        assert_eq!(many.namespace_problem(), None);
        assert!(Wrapper::try_parse_from(["x", "--desk-namespaces=a,B"]).is_err());
        assert_eq!(Wrapper::parse_from(["x"]).run.max_metadata_bytes, 64 * 1024);
    }

    #[test]
    fn booleans_and_lists_parse() {
        let cfg = Wrapper::parse_from([
            "x",
            "--manage-webhook-config=false",
            "--extra-san=a.example,127.0.0.1",
            "--tls-mode=files",
        ])
        .run;
        assert!(!cfg.manage_webhook_config);
        assert_eq!(cfg.tls_mode, TlsMode::Files);
        let names = cfg.service_dns_names();
        assert!(names.contains(&"cyberdesk-operator.cyberdesk-system.svc".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
    }
}
