//! The `cyberdesk-operator` binary as a user starts it: `version`, a bare
//! `cyberdesk-operator` running `run` from the environment alone, a `.env` file found from
//! the working directory (the environment winning over it), the Supabase pair refused when
//! half set, starts that cannot work exiting 1 with what failed, and a leader that cannot
//! renew its Lease for a whole lease duration exiting 1. Files mode with
//! `--manage-webhook-config=true` refused without webhook configurations and publishing
//! its `ca.crt` with them. And a SubjectAccessReview that
//! cannot answer in time denies the desk (this control plane has no webhook registered, so
//! an operator with a 0 ms review timeout serves nobody else).
//!
//! Every process here gets a cleared environment, so only what a test sets reaches it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cyberdesk_integration::cluster::{Cluster, apply, cluster, install_everything};
use cyberdesk_integration::controlplane::http_get;
use cyberdesk_integration::operator::{free_addr, metric_sample};
use cyberdesk_integration::wait::{eventually, holds, until};
use cyberdesk_integration::workspace::{operator_binary, repo_path};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

/// The crate version, as `Cargo.toml` states it.
fn crate_version() -> String {
    let manifest = std::fs::read_to_string(repo_path("Cargo.toml")).expect("Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("a version line in Cargo.toml")
        .to_string()
}

/// `cyberdesk-operator ARGS` with exactly `env` as its environment, run to its end; a
/// process still running after 30 s is killed and fails the test (a start that should have
/// been refused is serving instead).
fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(operator_binary())
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cyberdesk-operator");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "`cyberdesk-operator {}` still running after 30 s:\n{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

/// A kubeconfig that parses but names an apiserver nobody listens on: what a start needs
/// to get past the client's configuration without a cluster.
fn unreachable_kubeconfig(dir: &Path) -> PathBuf {
    let path = dir.join("unreachable.kubeconfig");
    let text = "apiVersion: v1\nkind: Config\nclusters:\n- name: nowhere\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\nusers:\n- name: someone\n  user:\n    token: not-a-secret\ncontexts:\n- name: nowhere\n  context: {cluster: nowhere, user: someone}\ncurrent-context: nowhere\n";
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cyberdesk-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// Asserts that a start ended with exit code 1 and `error: ...` naming `what` on stderr.
fn assert_refused(out: &Output, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}: {stderr}", out.status);
    let last = stderr.lines().rfind(|l| !l.is_empty()).unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.contains(what),
        "the last line should be `error: ...{what}...`:\n{stderr}"
    );
}

#[test]
fn version_prints_the_name_and_the_crate_version() {
    let want = format!("cyberdesk-operator {}", crate_version());
    for args in [&["version"][..], &["--version"][..]] {
        let out = run_to_end(args, &[]);
        assert!(out.status.success(), "{args:?}: {}", out.status);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{args:?}"
        );
    }
}

#[test]
fn half_of_the_supabase_settings_stops_the_start() {
    // No reachable cluster: a start that got past the check would fail on the client
    // instead, with another message.
    let dir = scratch_dir("supabase");
    let kubeconfig = unreachable_kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let url_only = run_to_end(
        &["run"],
        &[
            ("KUBECONFIG", kubeconfig),
            ("SUPABASE_URL", "https://project.supabase.co"),
            // The platform layout's own rule (one desk namespace) is met.
            ("CYBERDESK_DESK_NAMESPACES", "cyberdesk-system"),
        ],
    );
    assert_refused(
        &url_only,
        "set both SUPABASE_URL and SUPABASE_KEY, or neither",
    );
    let key_only = run_to_end(
        &["run"],
        &[("KUBECONFIG", kubeconfig), ("SUPABASE_KEY", "not-a-secret")],
    );
    assert_refused(
        &key_only,
        "set both SUPABASE_URL and SUPABASE_KEY, or neither",
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_broken_start_exits_1_and_says_what_failed() {
    let dir = scratch_dir("broken");
    let missing = dir.join("no-such.kubeconfig");
    let out = run_to_end(
        &["run"],
        &[("KUBECONFIG", missing.to_str().expect("utf-8 path"))],
    );
    assert_refused(&out, "cannot configure the Kubernetes client");

    let kubeconfig = unreachable_kubeconfig(&dir);
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let env = [("KUBECONFIG", kubeconfig)];

    // The admin port is taken.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr");
    let out = run_to_end(&["run", &format!("--admin-addr={busy}")], &env);
    assert_refused(
        &out,
        &format!("cannot listen on {busy} for the admin server"),
    );

    // The webhook port is taken (files mode, so the certificate loads without a cluster).
    let certs = dir.join("certs");
    let wrote = Command::new(operator_binary())
        .args(["certs", "--out", certs.to_str().expect("utf-8 path")])
        .output()
        .expect("certs");
    assert!(wrote.status.success(), "{wrote:?}");
    let cert = certs.join("tls.crt");
    let key = certs.join("tls.key");
    let files = [
        "--tls-mode=files".to_string(),
        format!("--tls-cert-file={}", cert.display()),
        format!("--tls-key-file={}", key.display()),
        "--manage-webhook-config=false".to_string(),
    ];
    let mut args = vec!["run".to_string(), format!("--admin-addr={}", free_addr())];
    args.extend(files.iter().cloned());
    args.push(format!("--webhook-addr={busy}"));
    let out = run_to_end(&args.iter().map(String::as_str).collect::<Vec<_>>(), &env);
    assert_refused(
        &out,
        &format!("cannot listen on {busy} for the webhook server"),
    );

    // The certificate files of files mode cannot be read.
    let absent = dir.join("absent.crt");
    let out = run_to_end(
        &[
            "run",
            &format!("--admin-addr={}", free_addr()),
            &format!("--webhook-addr={}", free_addr()),
            "--tls-mode=files",
            &format!("--tls-cert-file={}", absent.display()),
            &format!("--tls-key-file={}", key.display()),
        ],
        &env,
    );
    assert_refused(&out, "webhook TLS");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&absent.display().to_string()),
        "the message should name the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(dir);
}

/// An operator process started exactly as given (no flags added); SIGKILLed when dropped.
struct Bare {
    child: Child,
    log: PathBuf,
}

impl Bare {
    fn spawn(args: &[&str], env: &[(&str, String)], cwd: &Path, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(operator_binary());
        // SAFETY: only async-signal-safe prctl(2) between fork and exec; the operator dies
        // with the thread that started it.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn cyberdesk-operator");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&mut self, admin: SocketAddr) {
        let ready = holds(Duration::from_secs(60), || {
            matches!(http_get(admin, "/readyz"), Ok((200, _)))
        })
        .await;
        if !ready {
            let exited = self.child.try_wait().ok().flatten();
            panic!(
                "no ready operator at {admin} (exited: {exited:?}):\n{}",
                self.log()
            );
        }
    }

    async fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        until(within, || {
            std::future::ready(child.try_wait().ok().flatten())
        })
        .await
    }

    fn terminate(&self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared control plane with the CRDs and the operator's shipped RBAC, installed once.
async fn installed() -> Cluster {
    static INSTALLED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let c = cluster();
    INSTALLED.get_or_init(|| install_everything(&c)).await;
    c
}

/// What every operator of these tests needs besides its addresses and identity: no
/// webhook configurations to fill in, no policy files.
fn quiet_settings(c: &Cluster) -> Vec<(&'static str, String)> {
    vec![
        ("KUBECONFIG", c.operator_kubeconfig.display().to_string()),
        ("CYBERDESK_MANAGE_WEBHOOK_CONFIG", "false".into()),
        ("CYBERDESK_POLICY_DIR", "/nonexistent".into()),
        ("CYBERDESK_EXTRA_SANS", "127.0.0.1".into()),
        ("RUST_LOG", "info,kube=warn".into()),
    ]
}

fn leader_sample(admin: SocketAddr, identity: &str) -> Option<f64> {
    let (_, text) = http_get(admin, "/metrics").ok()?;
    metric_sample(
        &text,
        &format!(r#"cyberdesk_leader{{identity="{identity}"}}"#),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_binary_runs_run_configured_by_the_environment_alone() {
    let c = installed().await;
    let (admin, webhook) = (free_addr(), free_addr());
    let mut env = quiet_settings(&c);
    env.extend([
        ("CYBERDESK_ADMIN_ADDR", admin.to_string()),
        ("CYBERDESK_WEBHOOK_ADDR", webhook.to_string()),
        ("POD_NAME", "from-the-environment".to_string()),
        ("CYBERDESK_LEADER_ELECTION", "false".to_string()),
        ("CYBERDESK_LOG_FORMAT", "json".to_string()),
    ]);
    let dir = scratch_dir("bare");
    let mut op = Bare::spawn(&[], &env, &dir, c.dir.join("operator-bare.log"));
    op.wait_ready(admin).await;
    // The identity and leader election came from the environment: with leader election
    // off the replica reports itself leader at once, under that name.
    assert_eq!(
        leader_sample(admin, "from-the-environment"),
        Some(1.0),
        "{}",
        op.log()
    );
    assert!(
        std::net::TcpStream::connect_timeout(&webhook, Duration::from_secs(2)).is_ok(),
        "nothing listens on CYBERDESK_WEBHOOK_ADDR {webhook}"
    );
    // CYBERDESK_LOG_FORMAT=json: every line is a JSON object with a level, a message and
    // the event's fields beside them.
    let log = op.log();
    let mut listening = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "no level: {line}");
        assert!(value["message"].is_string(), "no message: {line}");
        if value["message"] == "admin server listening" {
            listening = Some(value);
        }
    }
    let listening = listening.unwrap_or_else(|| panic!("no `admin server listening`:\n{log}"));
    assert_eq!(
        listening["addr"],
        admin.to_string(),
        "the address as a field of its own: {listening}"
    );

    op.terminate();
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("still running 30 s after SIGTERM");
    assert!(status.success(), "{status}: {}", op.log());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotenv_file_above_the_working_directory_is_read_and_the_environment_wins() {
    let c = installed().await;
    let (admin, webhook) = (free_addr(), free_addr());
    let dir = scratch_dir("dotenv");
    let below = dir.join("work");
    std::fs::create_dir_all(&below).expect("mkdir");
    let mut file = String::new();
    for (key, value) in quiet_settings(&c) {
        file.push_str(&format!("{key}={value}\n"));
    }
    file.push_str(&format!(
        "CYBERDESK_ADMIN_ADDR={admin}\nCYBERDESK_WEBHOOK_ADDR={webhook}\nCYBERDESK_LEADER_ELECTION=false\nPOD_NAME=from-the-dotenv-file\n"
    ));
    std::fs::write(dir.join(".env"), file).expect("write .env");
    // Only the identity is in the environment; everything else must come from the file.
    let env = [("POD_NAME", "from-the-environment".to_string())];
    let mut op = Bare::spawn(&["run"], &env, &below, c.dir.join("operator-dotenv.log"));
    op.wait_ready(admin).await;
    assert_eq!(
        leader_sample(admin, "from-the-environment"),
        Some(1.0),
        "{}",
        op.log()
    );
    assert_eq!(leader_sample(admin, "from-the-dotenv-file"), None);
    op.terminate();
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("still running 30 s after SIGTERM");
    assert!(status.success(), "{status}: {}", op.log());
    let _ = std::fs::remove_dir_all(dir);
}

/// A Role and RoleBinding giving the operator's ServiceAccount the Lease `lease`, as an
/// admin who changes `--lease-name` must add (the shipped Role names only the default).
fn lease_rights(lease: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: lease-{lease}, namespace: cyberdesk-system}}\nrules:\n- apiGroups: [coordination.k8s.io]\n  resources: [leases]\n  resourceNames: [{lease}]\n  verbs: [get, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: lease-{lease}, namespace: cyberdesk-system}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: lease-{lease}}}\nsubjects:\n- {{kind: ServiceAccount, name: cyberdesk-operator, namespace: cyberdesk-system}}\n"
    )
}

fn leader_env(c: &Cluster, admin: SocketAddr, identity: &str) -> Vec<(&'static str, String)> {
    let mut env = quiet_settings(c);
    env.extend([
        ("CYBERDESK_ADMIN_ADDR", admin.to_string()),
        ("CYBERDESK_WEBHOOK_ADDR", free_addr().to_string()),
        ("POD_NAME", identity.to_string()),
    ]);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_cannot_be_read_stops_the_start() {
    let c = installed().await;
    let admin = free_addr();
    let env = leader_env(&c, admin, "no-lease-rights");
    let dir = scratch_dir("unreadable-lease");
    let mut op = Bare::spawn(
        &["run", "--lease-name=nobody-granted-this"],
        &env,
        &dir,
        c.dir.join("operator-unreadable-lease.log"),
    );
    let status = op
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("still running without rights on its Lease:\n{}", op.log()));
    let log = op.log();
    assert_eq!(status.code(), Some(1), "{status}: {log}");
    assert!(
        log.contains("error: cannot set up the leader Lease cyberdesk-system/nobody-granted-this"),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_for_a_whole_lease_duration_exits_1() {
    const LEASE: &str = "renewal-test";
    const DURATION: Duration = Duration::from_secs(6);
    let c = installed().await;
    apply(&c, &lease_rights(LEASE));
    let admin = free_addr();
    let env = leader_env(&c, admin, "renewer");
    let dir = scratch_dir("renewal");
    let mut op = Bare::spawn(
        &[
            "run",
            &format!("--lease-name={LEASE}"),
            &format!("--lease-duration-secs={}", DURATION.as_secs()),
            "--lease-renew-secs=1",
        ],
        &env,
        &dir,
        c.dir.join("operator-renewer.log"),
    );
    op.wait_ready(admin).await;
    // --lease-name: the Lease of that name is the one held.
    let leases: Api<Lease> = Api::namespaced(c.client().await, "cyberdesk-system");
    eventually(
        Duration::from_secs(30),
        "the operator holding its Lease",
        || async {
            let lease = leases.get_opt(LEASE).await.ok()??;
            (lease.spec?.holder_identity.as_deref() == Some("renewer")).then_some(())
        },
    )
    .await;
    let default_holder = leases
        .get_opt("cyberdesk-operator")
        .await
        .expect("read the default Lease")
        .and_then(|l| l.spec?.holder_identity);
    assert_ne!(default_holder.as_deref(), Some("renewer"));

    // An admin takes the rights away: every renewal is now refused.
    let revoked = c
        .kubectl()
        .run(
            &[
                "delete",
                "rolebinding",
                &format!("lease-{LEASE}"),
                "-n",
                "cyberdesk-system",
            ],
            None,
        )
        .expect("kubectl");
    assert!(revoked.success, "{}", revoked.stderr);
    let revoked_at = Instant::now();
    // The last renewal can be at most one renew period old: half a lease duration later the
    // leader must still be there.
    if let Some(status) = op.wait_exit(DURATION / 2).await {
        panic!(
            "exited ({status}) {:?} after its rights went, before a lease duration:\n{}",
            revoked_at.elapsed(),
            op.log()
        );
    }
    let status = op
        .wait_exit(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("still running without renewals:\n{}", op.log()));
    eprintln!("exited {:?} after its rights went", revoked_at.elapsed());
    let log = op.log();
    assert_eq!(status.code(), Some(1), "{status}: {log}");
    assert!(log.contains("cannot renew the leader Lease"), "{log}");
    assert!(
        log.lines()
            .rfind(|l| !l.is_empty())
            .is_some_and(|l| l.starts_with("error: lost the leader Lease")),
        "{log}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_access_review_without_an_answer_in_time_denies_the_desk() {
    use cyberdesk_integration::operator::{OperatorProcess, reconciler_only_flags};
    use cyberdesk_integration::webhook_tls::post;
    let c = installed().await;
    // No answer can come within 0 ms: every review times out. This control plane has no
    // webhook registered, so the review is sent the way the apiserver sends it.
    let mut flags = reconciler_only_flags(false);
    flags.push("--access-review-timeout-ms=0".into());
    let op = OperatorProcess::start(&c, "impatient", &flags);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(c.client().await, "cyberdesk-system");
    let ca = secrets
        .get("cyberdesk-webhook-tls")
        .await
        .expect("the TLS Secret")
        .data
        .and_then(|d| {
            d.get("ca.crt")
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        })
        .expect("ca.crt");
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "sar-timeout",
            "kind": {"group": "cyberdesk.io", "version": "v1alpha1", "kind": "Cyberdesk"},
            "resource": {"group": "cyberdesk.io", "version": "v1alpha1", "resource": "cyberdesks"},
            "name": "d", "namespace": "team-a", "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["team-a"]},
            "object": {
                "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
                "metadata": {"name": "d", "namespace": "team-a"},
                "spec": {"timeoutMs": 600000, "userDataSecretRef": {"name": "creds", "key": "userdata"}},
            },
        },
    });
    let (code, body) = post(&ca, op.webhook, "/validate", review.to_string().as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("a review");
    let response = &answer["response"];
    assert_eq!(response["allowed"], false, "{answer}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    for part in [
        "could not check that user",
        "no answer within",
        "refused to be safe, try again",
    ] {
        assert!(message.contains(part), "no {part:?}: {answer}");
    }
    let causes = response["status"]["details"]["causes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        causes
            .iter()
            .any(|c| c["field"] == "spec.userDataSecretRef.name"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_publishes_the_ca_file_once_and_needs_the_configurations() {
    use cyberdesk_integration::desks::{desk_yaml, wait_webhooks_active};
    use cyberdesk_integration::operator::{OperatorProcess, register_webhooks};
    use cyberdesk_integration::webhook_tls::published_bundles;
    let c = installed().await;
    let dir = scratch_dir("files-mode");
    let wrote = Command::new(operator_binary())
        .args([
            "certs",
            "--out",
            dir.to_str().expect("utf-8 path"),
            "--san",
            "127.0.0.1",
        ])
        .output()
        .expect("certs");
    assert!(wrote.status.success(), "{wrote:?}");
    let ca = std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt");
    let flags = [
        "--tls-mode=files".to_string(),
        format!("--tls-cert-file={}", dir.join("tls.crt").display()),
        format!("--tls-key-file={}", dir.join("tls.key").display()),
        "--manage-webhook-config=true".to_string(),
        "--leader-election=false".to_string(),
        "--policy-dir=/nonexistent".to_string(),
    ];

    // No webhook configurations in this control plane yet: the start stops with an error.
    let mut refused = OperatorProcess::start(&c, "files-unregistered", &flags);
    let status = refused
        .wait_exit(Duration::from_secs(60))
        .await
        .unwrap_or_else(|| panic!("started without webhook configurations:\n{}", refused.log()));
    let log = refused.log();
    assert_eq!(status.code(), Some(1), "{status}: {log}");
    assert!(
        log.contains(&format!(
            "error: webhook TLS: registering the webhooks with {}",
            dir.join("ca.crt").display()
        )) && log.contains("cannot put the CA bundle into webhook configuration"),
        "{log}"
    );

    // Installed (without caBundle, as the manifests ship them), the same start puts the CA
    // file into both, and the apiserver, trusting it, calls the webhooks.
    let webhook = free_addr();
    register_webhooks(&c, webhook).expect("webhook configurations");
    let op = OperatorProcess::start_on(&c, "files-registered", webhook, &flags);
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    assert_eq!(published_bundles(&c).await, [ca.clone(), ca]);
    let ns = cyberdesk_integration::cluster::namespace(&c.client().await, "files-mode").await;
    wait_webhooks_active(&c, &ns).await;
    let out = c
        .kubectl()
        .apply(
            &desk_yaml(&ns, "d", "{}"),
            &["--dry-run=server", "-o", "json"],
        )
        .expect("kubectl");
    assert!(
        out.success && out.stdout.contains("timeoutMs"),
        "{}",
        out.stderr
    );
    let _ = std::fs::remove_dir_all(dir);
}
