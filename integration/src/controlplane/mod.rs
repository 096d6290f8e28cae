//! Starts a real etcd + kube-apiserver pair on loopback, built by `make controlplane`
//! (`integration/controlplane/build.sh`), and tears it down when dropped.

mod health;
mod pki;
mod process;

pub use health::{http_get, https_get};
pub use pki::{ClientCertError, PemPair, TestCa};
pub use process::{ManagedChild, pid_alive};

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// Why the control plane could not start. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{name} not found at {path}: build the control plane with `make controlplane` \
         (or point CYBERDESK_CONTROLPLANE_BIN at a directory holding kube-apiserver, etcd and kubectl)"
    )]
    BinaryMissing { name: &'static str, path: PathBuf },
    #[error(
        "{what} port {port} on 127.0.0.1 is already in use: stop whatever listens there \
         (`ss -ltnp 'sport = :{port}'`) or let the launcher pick free ports"
    )]
    PortInUse { what: &'static str, port: u16 },
    #[error("could not create the working directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not generate certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("could not issue a client certificate: {0}")]
    ClientCert(#[from] ClientCertError),
    #[error("could not start {name} ({path}): {source}")]
    Spawn {
        name: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{name} exited during start-up ({status}); its log ({log}) ends with:\n{tail}")]
    Exited {
        name: &'static str,
        status: String,
        log: PathBuf,
        tail: String,
    },
    #[error("{name} was not ready after {waited:?}; its log ({log}) ends with:\n{tail}")]
    NotReady {
        name: &'static str,
        waited: Duration,
        log: PathBuf,
        tail: String,
    },
    #[error("could not write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// A process could not bind its port: someone took it after it was chosen.
    fn port_taken(&self) -> bool {
        matches!(self, Error::Exited { tail, .. } | Error::NotReady { tail, .. }
            if tail.contains("address already in use"))
    }
}

/// The user the operator authenticates as: its ServiceAccount in the shipped manifests.
/// Tests run the operator under this name so the shipped RBAC, not `system:masters`,
/// decides what it may do.
/// Every request once, when its response is complete, without bodies.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted]\nrules:\n- level: Metadata\n";
const AUDIT_LOG: &str = "audit.log";

pub const OPERATOR_USER: &str = "system:serviceaccount:cyberdesk-system:cyberdesk-operator";

/// The groups the apiserver gives a token of that ServiceAccount; a client certificate
/// carries them itself, so bindings to any of them apply as in a real cluster.
pub const OPERATOR_GROUPS: [&str; 3] = [
    "system:serviceaccounts",
    "system:serviceaccounts:cyberdesk-system",
    "system:authenticated",
];

/// Where `build.sh` puts the binaries, unless CYBERDESK_CONTROLPLANE_BIN says otherwise.
pub fn default_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CYBERDESK_CONTROLPLANE_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("CYBERDESK_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("cyberdesk-operator"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/cyberdesk-operator"))
        })
        .unwrap_or_else(|| PathBuf::from("/tmp/cyberdesk-operator-cache"));
    cache.join("controlplane/bin")
}

/// How to start a control plane. `Default` picks free ports and the default binaries.
#[derive(Clone, Debug)]
pub struct Options {
    pub bin_dir: PathBuf,
    /// `None`: pick a free port.
    pub apiserver_port: Option<u16>,
    pub etcd_port: Option<u16>,
    pub ready_timeout: Duration,
    /// Write an audit log (one JSON line per finished request, at `Metadata` level): the
    /// benchmarks count who asked the apiserver for what with it.
    pub audit_log: bool,
    /// Serve the apiserver's `/debug/pprof` (benchmarks read where its CPU goes).
    pub profiling: bool,
    /// The apiserver's `--feature-gates` (e.g. `WatchList=false`, as Kubernetes 1.33 ships).
    pub feature_gates: Vec<String>,
    /// Webhook hosts (`host:port` as in the webhook's URL, or `*`) the apiserver presents a
    /// client certificate to, through an AdmissionConfiguration whose kubeconfig has a user
    /// entry for each. The certificate is signed by a CA of its own
    /// ([`ControlPlane::webhook_client_ca_path`]). Empty: no client certificate, as by default.
    pub webhook_client_cert_for: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bin_dir: default_bin_dir(),
            apiserver_port: None,
            etcd_port: None,
            ready_timeout: Duration::from_secs(90),
            audit_log: false,
            profiling: false,
            feature_gates: Vec::new(),
            webhook_client_cert_for: Vec::new(),
        }
    }
}

/// A running etcd + kube-apiserver. Dropping it stops both (apiserver first) and removes
/// its working directory.
#[derive(Debug)]
pub struct ControlPlane {
    // Field order is drop order: the apiserver must stop before its etcd.
    apiserver: ManagedChild,
    etcd: ManagedChild,
    dir: PathBuf,
    ca: TestCa,
    apiserver_addr: SocketAddr,
    kubeconfig: PathBuf,
    operator_kubeconfig: PathBuf,
    kubectl: PathBuf,
    keep_dir: bool,
    audit_log: bool,
    apiserver_bin: PathBuf,
    apiserver_args: Vec<String>,
    etcd_bin: PathBuf,
    etcd_args: Vec<String>,
    etcd_port: u16,
    ready_timeout: Duration,
    webhook_client_ca: Option<PathBuf>,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

fn claim_port(what: &'static str, wanted: Option<u16>) -> Result<u16, Error> {
    match wanted {
        Some(port) => match TcpListener::bind(loopback(port)) {
            Ok(_) => Ok(port),
            Err(_) => Err(Error::PortInUse { what, port }),
        },
        None => crate::ports::unused_port().map_err(|_| Error::PortInUse { what, port: 0 }),
    }
}

fn binary(bin_dir: &Path, name: &'static str) -> Result<PathBuf, Error> {
    let path = bin_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::BinaryMissing { name, path })
    }
}

fn write(path: PathBuf, contents: &str) -> Result<PathBuf, Error> {
    std::fs::write(&path, contents).map_err(|source| Error::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// tmpfs when there is one: etcd fsyncs far less painfully there.
fn work_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(probe) = tempdir_in(shm)
    {
        let _ = std::fs::remove_dir(probe);
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

fn tempdir_in(root: &Path) -> std::io::Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = root.join(format!("cyberdesk-cp-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Polls `probe` until it says ready, the child exits, or time runs out.
fn wait_ready(
    child: &mut ManagedChild,
    name: &'static str,
    timeout: Duration,
    mut probe: impl FnMut() -> bool,
) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        if probe() {
            return Ok(());
        }
        if let Some(status) = child.exited() {
            return Err(Error::Exited {
                name,
                status: status.to_string(),
                log: child.log_path().to_path_buf(),
                tail: child.log_tail(4000),
            });
        }
        if start.elapsed() > timeout {
            return Err(Error::NotReady {
                name,
                waited: timeout,
                log: child.log_path().to_path_buf(),
                tail: child.log_tail(4000),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl ControlPlane {
    /// Starts etcd, then kube-apiserver, and returns once `/readyz` answers 200. On any
    /// failure, whatever was started is stopped again before the error is returned.
    ///
    /// Call it from a thread that outlives the control plane: the children are killed when
    /// the thread that spawned them exits.
    /// Starts etcd and kube-apiserver on free ports. A port is free when chosen and bound
    /// by the process a moment later; another process on the machine (a parallel test
    /// binary) may take it in between, so a start that fails on a taken port is tried
    /// again on new ports, up to three times.
    pub fn start(opts: &Options) -> Result<Self, Error> {
        let mut attempt = 1;
        loop {
            match Self::start_once(opts) {
                Err(e)
                    if attempt < 3
                        && e.port_taken()
                        && opts.apiserver_port.is_none()
                        && opts.etcd_port.is_none() =>
                {
                    eprintln!(
                        "control plane: a port was taken during start-up; trying again ({e})"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn start_once(opts: &Options) -> Result<Self, Error> {
        let apiserver_bin = binary(&opts.bin_dir, "kube-apiserver")?;
        let etcd_bin = binary(&opts.bin_dir, "etcd")?;
        let kubectl = binary(&opts.bin_dir, "kubectl")?;

        let api_port = claim_port("kube-apiserver", opts.apiserver_port)?;
        let etcd_port = claim_port("etcd client", opts.etcd_port)?;
        let peer_port = claim_port("etcd peer", None)?;

        let root = work_root();
        let dir = tempdir_in(&root).map_err(|source| Error::WorkDir {
            path: root.clone(),
            source,
        })?;
        let cleanup_dir = scopeguard(dir.clone());

        let ca = TestCa::new("cyberdesk-test-ca")?;
        let serving = ca.issue_server(
            "kube-apiserver",
            &["127.0.0.1", "localhost", "kubernetes.default.svc"],
        )?;
        let admin = ca.issue_client("cyberdesk-admin", &["system:masters"])?;
        let operator = ca.issue_client(OPERATOR_USER, &OPERATOR_GROUPS)?;
        let ca_file = write(dir.join("ca.crt"), ca.cert_pem())?;
        let serving_crt = write(dir.join("apiserver.crt"), &serving.cert_pem)?;
        let serving_key = write(dir.join("apiserver.key"), &serving.key_pem)?;
        let (sa_private, sa_public) = pki::service_account_key()?;
        let sa_key = write(dir.join("sa.key"), &sa_private)?;
        let sa_pub = write(dir.join("sa.pub"), &sa_public)?;

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=default".to_string(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
            // As kubeadm and GCE run etcd: the apiserver's watch cache learns of progress
            // on quiet resources from these notifications, and the bookmark that ends a
            // streaming list can wait for one (10 minutes by etcd's default).
            "--watch-progress-notify-interval=5s".to_string(),
        ];
        let mut etcd = ManagedChild::spawn("etcd", &etcd_bin, &etcd_args, dir.join("etcd.log"))
            .map_err(|source| Error::Spawn {
                name: "etcd",
                path: etcd_bin.clone(),
                source,
            })?;
        wait_ready(
            &mut etcd,
            "etcd",
            opts.ready_timeout,
            || matches!(http_get(loopback(etcd_port), "/health"), Ok((200, body)) if body.contains("true")),
        )?;

        let p = |f: &Path| f.display().to_string();
        let api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={api_port}"),
            // A loopback-only host has no routable address; with `none` the apiserver does
            // not try to publish 127.0.0.1 as the `kubernetes` Endpoints (rejected anyway).
            "--advertise-address=127.0.0.1".to_string(),
            "--endpoint-reconciler-type=none".to_string(),
            format!("--tls-cert-file={}", p(&serving_crt)),
            format!("--tls-private-key-file={}", p(&serving_key)),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--client-ca-file={}", p(&ca_file)),
            format!("--service-account-issuer=https://127.0.0.1:{api_port}"),
            format!("--service-account-key-file={}", p(&sa_pub)),
            format!("--service-account-signing-key-file={}", p(&sa_key)),
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            "--authorization-mode=RBAC".to_string(),
            // No controller-manager runs, so no default ServiceAccount would ever appear.
            "--disable-admission-plugins=ServiceAccount".to_string(),
            "--allow-privileged=true".to_string(),
            format!("--profiling={}", opts.profiling),
        ];
        let mut api_args = api_args;
        if !opts.feature_gates.is_empty() {
            api_args.push(format!("--feature-gates={}", opts.feature_gates.join(",")));
        }
        let webhook_client_ca = if opts.webhook_client_cert_for.is_empty() {
            None
        } else {
            let (admission_config, ca) =
                webhook_client_identity(&dir, &opts.webhook_client_cert_for)?;
            api_args.push(format!(
                "--admission-control-config-file={}",
                p(&admission_config)
            ));
            Some(ca)
        };
        if opts.audit_log {
            let policy = write(dir.join("audit-policy.yaml"), AUDIT_POLICY)?;
            api_args.extend([
                format!("--audit-policy-file={}", p(&policy)),
                format!("--audit-log-path={}", dir.join(AUDIT_LOG).display()),
                "--audit-log-format=json".to_string(),
                // 0 means lumberjack's default of 100 MB, after which it rotates and the
                // counting offset points past the new file: never rotate in a bench.
                "--audit-log-maxsize=1000000".to_string(),
            ]);
        }
        let mut apiserver = ManagedChild::spawn(
            "kube-apiserver",
            &apiserver_bin,
            &api_args,
            dir.join("kube-apiserver.log"),
        )
        .map_err(|source| Error::Spawn {
            name: "kube-apiserver",
            path: apiserver_bin.clone(),
            source,
        })?;
        let ca_pem = ca.cert_pem().to_string();
        wait_ready(&mut apiserver, "kube-apiserver", opts.ready_timeout, || {
            matches!(
                https_get(loopback(api_port), &ca_pem, "/readyz"),
                Ok((200, _))
            )
        })?;

        let kubeconfig = write(
            dir.join("kubeconfig"),
            &render_kubeconfig(api_port, ca.cert_pem(), "cyberdesk-admin", &admin),
        )?;
        let operator_kubeconfig = write(
            dir.join("operator.kubeconfig"),
            &render_kubeconfig(api_port, ca.cert_pem(), "cyberdesk-operator", &operator),
        )?;
        cleanup_dir.disarm();
        Ok(Self {
            apiserver,
            etcd,
            dir,
            ca,
            apiserver_addr: loopback(api_port),
            kubeconfig,
            operator_kubeconfig,
            kubectl,
            keep_dir: std::env::var_os("CYBERDESK_KEEP_CONTROLPLANE_DIR").is_some(),
            audit_log: opts.audit_log,
            apiserver_bin,
            apiserver_args: api_args,
            etcd_bin,
            etcd_args,
            etcd_port,
            ready_timeout: opts.ready_timeout,
            webhook_client_ca,
        })
    }

    /// The CA (PEM file) that signed the client certificate the apiserver presents to
    /// webhooks, when [`Options::webhook_client_cert_for`] asked for one.
    pub fn webhook_client_ca_path(&self) -> Option<&Path> {
        self.webhook_client_ca.as_deref()
    }

    /// The apiserver's audit log, when [`Options::audit_log`] asked for one (the
    /// apiserver creates the file with its first logged request).
    pub fn audit_log_path(&self) -> Option<PathBuf> {
        self.audit_log.then(|| self.dir.join(AUDIT_LOG))
    }

    /// The cluster admin (`system:masters`): for installing things and for assertions.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The operator's ServiceAccount ([`OPERATOR_USER`]): what RBAC must allow is exactly
    /// what the shipped manifests grant it.
    pub fn operator_kubeconfig_path(&self) -> &Path {
        &self.operator_kubeconfig
    }

    pub fn kubectl_path(&self) -> &Path {
        &self.kubectl
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://{}", self.apiserver_addr)
    }

    pub fn apiserver_addr(&self) -> SocketAddr {
        self.apiserver_addr
    }

    /// The CA that signed the apiserver's serving cert; also usable for test webhook certs.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pids(&self) -> (u32, u32) {
        (self.apiserver.pid(), self.etcd.pid())
    }

    pub fn apiserver_log(&self) -> PathBuf {
        self.apiserver.log_path().to_path_buf()
    }

    /// Children run; used to check nothing was left behind.
    pub fn children(&self) -> [&ManagedChild; 2] {
        [&self.apiserver, &self.etcd]
    }

    /// Stops only kube-apiserver (etcd keeps the data): for "apiserver went away" tests.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop(Duration::from_secs(5));
    }

    /// Stops only etcd (its data directory stays): the apiserver keeps running and answers
    /// with errors until [`ControlPlane::start_etcd`].
    pub fn stop_etcd(&mut self) {
        self.etcd.stop(Duration::from_secs(5));
    }

    /// Starts etcd again on the same port and data directory and waits for its health.
    pub fn start_etcd(&mut self) -> Result<(), Error> {
        let log = self.dir.join("etcd-restarted.log");
        self.etcd = ManagedChild::spawn("etcd", &self.etcd_bin, &self.etcd_args, log).map_err(
            |source| Error::Spawn {
                name: "etcd",
                path: self.etcd_bin.clone(),
                source,
            },
        )?;
        let port = self.etcd_port;
        wait_ready(
            &mut self.etcd,
            "etcd",
            self.ready_timeout,
            || matches!(http_get(loopback(port), "/health"), Ok((200, body)) if body.contains("true")),
        )
    }

    /// Starts kube-apiserver again with the same flags, port and etcd, and waits for /readyz.
    pub fn start_apiserver(&mut self) -> Result<(), Error> {
        let log = self.dir.join("kube-apiserver-restarted.log");
        self.apiserver = ManagedChild::spawn(
            "kube-apiserver",
            &self.apiserver_bin,
            &self.apiserver_args,
            log,
        )
        .map_err(|source| Error::Spawn {
            name: "kube-apiserver",
            path: self.apiserver_bin.clone(),
            source,
        })?;
        let (addr, ca) = (self.apiserver_addr, self.ca.cert_pem().to_string());
        wait_ready(
            &mut self.apiserver,
            "kube-apiserver",
            self.ready_timeout,
            || matches!(https_get(addr, &ca, "/readyz"), Ok((200, _))),
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.apiserver.stop(Duration::from_secs(3));
        self.etcd.stop(Duration::from_secs(3));
        if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A CA of its own and a client certificate from it for the apiserver's webhook calls, a
/// kubeconfig with a user entry per host that presents it, and the AdmissionConfiguration
/// that points both webhook plugins at that kubeconfig: (the configuration, the CA's PEM).
fn webhook_client_identity(dir: &Path, hosts: &[String]) -> Result<(PathBuf, PathBuf), Error> {
    let ca = TestCa::new("cyberdesk-webhook-client-ca")?;
    let client = ca.issue_client("kube-apiserver-webhook-client", &[])?;
    let ca_file = write(dir.join("webhook-client-ca.crt"), ca.cert_pem())?;
    let cert = write(dir.join("webhook-client.crt"), &client.cert_pem)?;
    let key = write(dir.join("webhook-client.key"), &client.key_pem)?;
    let users: Vec<serde_json::Value> = hosts
        .iter()
        .map(|host| {
            serde_json::json!({"name": host, "user": {
                "client-certificate": cert.display().to_string(),
                "client-key": key.display().to_string(),
            }})
        })
        .collect();
    let kubeconfig = serde_json::json!({"apiVersion": "v1", "kind": "Config", "users": users});
    let kubeconfig = write(
        dir.join("webhook-client.kubeconfig"),
        &serde_json::to_string_pretty(&kubeconfig).unwrap_or_default(),
    )?;
    let plugin = |name: &str| {
        serde_json::json!({"name": name, "configuration": {
            "apiVersion": "apiserver.config.k8s.io/v1",
            "kind": "WebhookAdmissionConfiguration",
            "kubeConfigFile": kubeconfig.display().to_string(),
        }})
    };
    let config = serde_json::json!({
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [plugin("ValidatingAdmissionWebhook"), plugin("MutatingAdmissionWebhook")],
    });
    let config = write(
        dir.join("admission-config.yaml"),
        &serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    Ok((config, ca_file))
}

/// A kubeconfig for one client-certificate identity; `user` only names the entry.
fn render_kubeconfig(port: u16, ca_pem: &str, user: &str, identity: &PemPair) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cyberdesk-test", "cluster": {
            "server": format!("https://127.0.0.1:{port}"),
            "certificate-authority-data": B64.encode(ca_pem),
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": B64.encode(&identity.cert_pem),
            "client-key-data": B64.encode(&identity.key_pem),
        }}],
        "contexts": [{"name": "cyberdesk-test", "context": {"cluster": "cyberdesk-test", "user": user}}],
        "current-context": "cyberdesk-test",
    });
    // JSON is valid YAML; both kubectl and kube-rs read it.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Removes a directory on drop unless disarmed: a failed start leaves nothing behind.
struct DirGuard(Option<PathBuf>);

fn scopeguard(dir: PathBuf) -> DirGuard {
    DirGuard(Some(dir))
}

impl DirGuard {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
