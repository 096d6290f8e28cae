//! Runs the operator as a child process against a control plane, the way a Deployment
//! would run it (as its ServiceAccount, under the shipped RBAC), and gives tests handles to
//! signal, kill and inspect it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::{Cluster, install_everything};
use crate::controlplane::http_get;
use crate::wait::{blocking, until};
use crate::workspace::{operator_binary, operator_output};

pub fn free_addr() -> SocketAddr {
    let port = crate::ports::unused_port().unwrap_or_else(|e| panic!("no free port: {e}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Registers both webhook configurations for an operator serving at `webhook`, as the
/// admin: `cyberdesk-operator webhook-config --url=https://ADDR | kubectl apply`. The
/// operator only fills in caBundle (its RBAC is meant to allow no more), so the
/// configurations must exist before it starts, as after a real install.
pub fn register_webhooks(c: &Cluster, webhook: SocketAddr) -> Result<(), String> {
    let out = operator_output(&["webhook-config", &format!("--url=https://{webhook}")]);
    if !out.status.success() {
        return Err(format!(
            "cyberdesk-operator webhook-config failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    c.kubectl()
        .apply(
            &String::from_utf8_lossy(&out.stdout),
            &["--server-side", "--force-conflicts"],
        )
        .map_err(|e| format!("kubectl apply of the webhook configurations: {e}"))?
        .ok()
        .map(drop)
}

/// Flags for an operator that registers no webhooks (tests of the reconciler alone) and
/// reads no policy files.
pub fn reconciler_only_flags(leader_election: bool) -> Vec<String> {
    vec![
        "--manage-webhook-config=false".to_string(),
        "--extra-san=127.0.0.1".to_string(),
        "--policy-dir=/nonexistent".to_string(),
        format!("--leader-election={leader_election}"),
    ]
}

/// An operator process. Dropping it SIGKILLs it.
pub struct OperatorProcess {
    child: Child,
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
    pub identity: String,
    log: PathBuf,
}

impl OperatorProcess {
    /// `cyberdesk-operator run` as the operator's ServiceAccount (`c.operator_kubeconfig`),
    /// with free ports, the given identity (pod name) and extra flags; logs to
    /// `c.dir/operator-<identity>.log`. For an operator that serves the webhooks by URL use
    /// [`OperatorProcess::start_serving_webhooks`], which registers them first.
    pub fn start(c: &Cluster, identity: &str, extra: &[String]) -> Self {
        Self::start_on(c, identity, free_addr(), extra)
    }

    /// As `start`, serving both webhooks on a free port (127.0.0.1 in the certificate). The
    /// admin registers both configurations for its URL first
    /// ([`register_webhooks`]), as a cluster install does: the shipped RBAC only
    /// lets the operator put the CA bundle into them.
    pub fn start_serving_webhooks(c: &Cluster, identity: &str, extra: &[String]) -> Self {
        let webhook = free_addr();
        if let Err(e) = register_webhooks(c, webhook) {
            panic!("registering the webhooks for {identity}: {e}");
        }
        let mut args = vec!["--extra-san=127.0.0.1".to_string()];
        args.extend_from_slice(extra);
        Self::start_on(c, identity, webhook, &args)
    }

    /// Spawns the process with the webhook server on `webhook` (a restart on the port the
    /// webhook configurations already point at).
    pub fn start_on(c: &Cluster, identity: &str, webhook: SocketAddr, extra: &[String]) -> Self {
        Self::start_with_env(c, identity, webhook, extra, &[])
    }

    /// As `start_on`, with these environment variables set as well (what a Deployment's
    /// `env`/`envFrom` would give).
    pub fn start_with_env(
        c: &Cluster,
        identity: &str,
        webhook: SocketAddr,
        extra: &[String],
        env: &[(String, String)],
    ) -> Self {
        let admin = free_addr();
        let log = c.dir.join(format!("operator-{identity}.log"));
        let log_file =
            std::fs::File::create(&log).unwrap_or_else(|e| panic!("log {}: {e}", log.display()));
        let mut cmd = Command::new(operator_binary());
        // SAFETY: only async-signal-safe prctl(2) between fork and exec. The operator dies
        // with the thread that started it, so no test leaves one behind.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .arg("run")
            .arg(format!("--admin-addr={admin}"))
            .arg(format!("--webhook-addr={webhook}"))
            .arg(format!("--pod-name={identity}"))
            .arg("--namespace=cyberdesk-system")
            .args(extra)
            .env("KUBECONFIG", &c.operator_kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("CYBERDESK_TEST_LOG").unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .env_remove("CYBERDESK_NAMESPACE")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn operator: {e}"));
        Self {
            child,
            admin,
            webhook,
            identity: identity.to_string(),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        let admin = self.admin;
        until(within, || async move {
            matches!(http_get(admin, "/readyz"), Ok((200, _))).then_some(())
        })
        .await
        .is_some()
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        until(within, || {
            std::future::ready(child.try_wait().ok().flatten())
        })
        .await
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a shared operator listens; the process itself lives on a keeper thread.
#[derive(Clone, Debug)]
pub struct SharedOperator {
    pub admin: SocketAddr,
    pub webhook: SocketAddr,
    pub log: PathBuf,
    pub pid: u32,
}

impl SharedOperator {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An operator whose admin server can be scraped.
pub trait Scrape {
    fn admin_addr(&self) -> SocketAddr;

    /// The `/metrics` text; empty when the scrape failed.
    fn metrics(&self) -> String {
        http_get(self.admin_addr(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// The `/metrics` text, panicking when the scrape fails or is not answered 200: for
    /// checks where a missing sample means "never happened" and must not hide a failed scrape.
    fn scrape(&self) -> String {
        match http_get(self.admin_addr(), "/metrics") {
            Ok((200, body)) => body,
            Ok((status, body)) => panic!(
                "/metrics on {} answered {status}: {body}",
                self.admin_addr()
            ),
            Err(e) => panic!("scraping /metrics on {}: {e}", self.admin_addr()),
        }
    }

    /// Value of an unlabelled (or exactly-labelled) sample, e.g. `cyberdesk_vm_created_total`;
    /// `None` when absent or the scrape failed.
    fn metric(&self, sample: &str) -> Option<f64> {
        metric_sample(&self.metrics(), sample)
    }
}

impl Scrape for OperatorProcess {
    fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
}

impl Scrape for SharedOperator {
    fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
}

/// The value of `sample` (a name with its exact labels, if any) in a Prometheus text
/// exposition; `None` when absent, so a failed scrape never reads as zero.
pub fn metric_sample(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Starts one operator per test binary with `start` on a thread that lives as long as the
/// binary (the operator dies with the thread that spawned it), and waits until it is ready.
pub fn start_shared_operator(
    start: impl FnOnce() -> OperatorProcess + Send + 'static,
) -> Result<SharedOperator, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("operator-keeper".into())
        .spawn(move || {
            let process = start();
            let info = SharedOperator {
                admin: process.admin,
                webhook: process.webhook,
                log: process.log.clone(),
                pid: process.pid(),
            };
            let ready = blocking(process.wait_ready(Duration::from_secs(60)));
            let _ = tx.send(if ready {
                Ok(info)
            } else {
                Err(format!("operator never ready:\n{}", process.log()))
            });
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|_| "operator keeper thread died before ready (its panic is above)".to_string())?
}

/// Everything installed and an operator started with `flags` as its ServiceAccount, ready;
/// panics with the operator's log otherwise.
pub async fn ready_operator(c: &Cluster, identity: &str, flags: &[String]) -> OperatorProcess {
    install_everything(c).await;
    let operator = OperatorProcess::start(c, identity, flags);
    assert!(
        operator.wait_ready(Duration::from_secs(60)).await,
        "{}",
        operator.log()
    );
    operator
}

/// The shared control plane with everything installed and one operator per test binary
/// serving the webhooks (self-managed TLS, registered by URL; see
/// [`OperatorProcess::start_serving_webhooks`]), plus `extra` flags.
pub async fn webhook_operator(extra: &[&str]) -> (Cluster, SharedOperator) {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    static OPERATOR: std::sync::OnceLock<Result<SharedOperator, String>> =
        std::sync::OnceLock::new();
    let c = crate::cluster::cluster();
    INSTALLED.get_or_init(|| install_everything(&c)).await;
    let mut flags = vec![
        "--leader-election=false".to_string(),
        "--policy-dir=/nonexistent".to_string(),
    ];
    flags.extend(extra.iter().map(|s| s.to_string()));
    let op = OPERATOR.get_or_init(|| {
        let c = c.clone();
        start_shared_operator(move || OperatorProcess::start_serving_webhooks(&c, "shared", &flags))
    });
    match op {
        Ok(op) => (c, op.clone()),
        Err(e) => panic!("operator: {e}"),
    }
}
