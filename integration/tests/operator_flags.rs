//! A running operator started with non-default flags, each checked where a user sees it:
//! `--tls-secret` and `--service-name` (the Secret holding the certificate, its names, a
//! handshake under the Service's name, the caBundle), `--template-configmap` and
//! `--policy-configmap` (the ConfigMaps of those names are the ones read, the default names
//! are not), `--default-timeout-ms` (the mutating webhook's default), `--log-format=json`
//! and `--max-concurrent-reconciles` (in the log). The same operator serves the shipped
//! policies from `policies/`: the warnings kubectl prints and the 7-day denial; its webhook
//! port answers an oversized body 413 and a body that is no review 400; `/livez` answers;
//! and a SubjectAccessReview that fails denies the desk.

use std::net::SocketAddr;
use std::time::Duration;

use cyberdesk_integration::cluster::{
    Cluster, apply, cluster, install_everything, install_operator_rbac,
};
use cyberdesk_integration::controlplane::http_get;
use cyberdesk_integration::desks::{
    desk_namespace, desk_yaml, epoch_ms, now_ms, wait_webhooks_active,
};
use cyberdesk_integration::kubectl::KubectlOutput;
use cyberdesk_integration::kubevirt::SimulatorOptions;
use cyberdesk_integration::operator::{
    OperatorProcess, Scrape, SharedOperator, metric_sample, start_shared_operator,
};
use cyberdesk_integration::wait::eventually;
use cyberdesk_integration::webhook_tls::{post, published_bundles, webhook_tls_client};
use cyberdesk_integration::workspace::repo_path;
use cyberdesk_operator::certs::tls::CertInfo;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

const TLS_SECRET: &str = "flags-webhook-tls";
const SERVICE: &str = "desk-hooks";
const TEMPLATE_CONFIGMAP: &str = "flags-template";
const POLICY_CONFIGMAP: &str = "flags-policies";
const DEFAULT_TIMEOUT_MS: i64 = 5_400_000;
const MAX_CONCURRENT_RECONCILES: u64 = 3;

/// A template ConfigMap: the shipped template with the label `template-source: <marker>`
/// on the VM, so a VM shows which ConfigMap it came from.
fn template_configmap(name: &str, marker: &str) -> String {
    let shipped = std::fs::read_to_string(repo_path("manifests/base/vm-template/template.yaml"))
        .expect("shipped template");
    let marked = shipped.replacen(
        "  labels:\n",
        &format!("  labels:\n    template-source: {marker}\n"),
        1,
    );
    assert_ne!(marked, shipped, "the shipped template has no labels block");
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "cyberdesk-system",
                     "labels": {"cyberdesk.io/template": "true"}},
        "data": {"template.yaml": marked},
    })
    .to_string()
}

/// A policy ConfigMap with one deny policy forbidding the label `<label>: "yes"`.
fn policy_configmap(name: &str, policy_name: &str, label: &str) -> String {
    let policy = serde_json::json!({
        "name": policy_name,
        "description": format!("no desk labelled {label}=yes"),
        "enforcement": "deny",
        "schema": {"properties": {"metadata": {"properties": {"labels": {"properties": {
            label: {"not": {"const": "yes"}}
        }}}}}},
    });
    serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "cyberdesk-system"},
        "data": {format!("{policy_name}.json"): policy.to_string()},
    })
    .to_string()
}

/// What an admin adds when moving the TLS Secret: the shipped Role names only the default.
fn secret_rights() -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {TLS_SECRET}, namespace: cyberdesk-system}}\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [{TLS_SECRET}]\n  verbs: [get, update, patch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {TLS_SECRET}, namespace: cyberdesk-system}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {TLS_SECRET}}}\nsubjects:\n- {{kind: ServiceAccount, name: cyberdesk-operator, namespace: cyberdesk-system}}\n"
    )
}

/// Everything the flags point at exists before the operator starts (so readiness means it
/// has read them), both under the flags' names and under the defaults', which must be
/// ignored.
async fn prepare(c: &Cluster) {
    install_everything(c).await;
    apply(c, &secret_rights());
    apply(c, &template_configmap(TEMPLATE_CONFIGMAP, "flags"));
    apply(
        c,
        &template_configmap("cyberdesk-vm-template", "default-name"),
    );
    apply(
        c,
        &policy_configmap(POLICY_CONFIGMAP, "flags-forbidden-label", "forbidden"),
    );
    apply(
        c,
        &policy_configmap("cyberdesk-policies", "default-name-label", "other"),
    );
}

async fn setup() -> (Cluster, SharedOperator) {
    static PREPARED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    static OPERATOR: std::sync::OnceLock<Result<SharedOperator, String>> =
        std::sync::OnceLock::new();
    let c = cluster();
    PREPARED.get_or_init(|| prepare(&c)).await;
    let flags = [
        "--leader-election=false".to_string(),
        format!("--policy-dir={}", repo_path("policies").display()),
        format!("--tls-secret={TLS_SECRET}"),
        format!("--service-name={SERVICE}"),
        format!("--template-configmap={TEMPLATE_CONFIGMAP}"),
        format!("--policy-configmap={POLICY_CONFIGMAP}"),
        format!("--default-timeout-ms={DEFAULT_TIMEOUT_MS}"),
        format!("--max-concurrent-reconciles={MAX_CONCURRENT_RECONCILES}"),
        "--log-format=json".to_string(),
    ];
    let op = OPERATOR.get_or_init(|| {
        let c = c.clone();
        start_shared_operator(move || OperatorProcess::start_serving_webhooks(&c, "flags", &flags))
    });
    match op {
        Ok(op) => (c, op.clone()),
        Err(e) => panic!("operator: {e}"),
    }
}

async fn tls_secret(c: &Cluster, name: &str) -> Option<Secret> {
    let secrets: Api<Secret> = Api::namespaced(c.client().await, "cyberdesk-system");
    secrets.get_opt(name).await.expect("read Secret")
}

fn secret_text(secret: &Secret, key: &str) -> String {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A TLS handshake with the webhook server, asking for `server_name` and trusting only
/// `ca_pem`: it succeeds only if the served certificate is valid for that name.
async fn handshake(ca_pem: &str, addr: SocketAddr, server_name: &str) -> Result<(), String> {
    let connector = webhook_tls_client(ca_pem)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    connector
        .connect(name, tcp)
        .await
        .map(drop)
        .map_err(|e| format!("handshake as {server_name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_lives_in_the_tls_secret_and_names_the_service() {
    let (c, op) = setup().await;
    let secret = tls_secret(&c, TLS_SECRET)
        .await
        .unwrap_or_else(|| panic!("no Secret {TLS_SECRET}:\n{}", op.log()));
    assert!(
        tls_secret(&c, "cyberdesk-webhook-tls").await.is_none(),
        "the default Secret was written too"
    );
    let leaf = CertInfo::from_pem(&secret_text(&secret, "tls.crt")).expect("tls.crt");
    for name in [
        format!("{SERVICE}.cyberdesk-system.svc"),
        format!("{SERVICE}.cyberdesk-system.svc.cluster.local"),
        format!("{SERVICE}.cyberdesk-system"),
        SERVICE.to_string(),
    ] {
        assert!(leaf.covers(&name), "{name} not in {:?}", leaf.dns_names);
    }
    assert!(
        !leaf.covers("cyberdesk-operator.cyberdesk-system.svc"),
        "the default Service name is still in {:?}",
        leaf.dns_names
    );
    // The server presents it under the Service's name, chained to the Secret's CA.
    let ca = secret_text(&secret, "ca.crt");
    handshake(&ca, op.webhook, &format!("{SERVICE}.cyberdesk-system.svc"))
        .await
        .expect("a handshake under the Service's name");
    assert!(
        handshake(&ca, op.webhook, "cyberdesk-operator.cyberdesk-system.svc")
            .await
            .is_err(),
        "the certificate is valid for the default Service name"
    );
    // And that CA is what the webhook configurations publish.
    eventually(
        Duration::from_secs(30),
        "the Secret's CA in both caBundles",
        || async { (published_bundles(&c).await == [ca.clone(), ca.clone()]).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_without_a_template_gets_the_template_configmap_of_the_flag() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "flags-template", SimulatorOptions::default()).await;
    apply(&c, &desk_yaml(&ns, "plain", "{timeoutMs: 600000}"));
    let vm = eventually(Duration::from_secs(30), "the desk's VM", || async {
        apis.vms.get_opt("cyberdesk-plain").await.ok()?
    })
    .await;
    let labels = vm.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("template-source").map(String::as_str),
        Some("flags"),
        "{labels:?}"
    );
}

/// `kubectl apply --dry-run=server` of `yaml` as the admin.
fn dry_run(c: &Cluster, yaml: &str) -> KubectlOutput {
    c.kubectl()
        .apply(yaml, &["--dry-run=server", "-o", "json"])
        .expect("kubectl")
}

fn labelled_desk(ns: &str, name: &str, label: &str) -> String {
    format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{label}: \"yes\"}}\nspec: {{timeoutMs: 600000}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_come_from_the_configmap_of_the_flag() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = cyberdesk_integration::cluster::namespace(&client, "flags-policies").await;
    wait_webhooks_active(&c, &ns).await;
    let denied = dry_run(&c, &labelled_desk(&ns, "forbidden", "forbidden"));
    assert!(!denied.success, "admitted: {}", denied.stdout);
    assert!(
        denied.stderr.contains("policy \"flags-forbidden-label\""),
        "{}",
        denied.stderr
    );
    let admitted = dry_run(&c, &labelled_desk(&ns, "other", "other"));
    assert!(
        admitted.success,
        "the policy of ConfigMap cyberdesk-policies, not the flag's, was applied: {}",
        admitted.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mutating_webhook_defaults_to_the_flags_timeout() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = cyberdesk_integration::cluster::namespace(&client, "flags-default").await;
    wait_webhooks_active(&c, &ns).await;
    let out = dry_run(&c, &desk_yaml(&ns, "bare", "{}"));
    assert!(out.success, "{}", out.stderr);
    let desk: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(desk["spec"]["timeoutMs"], DEFAULT_TIMEOUT_MS, "{desk}");
}

fn warnings(out: &KubectlOutput) -> Vec<&str> {
    out.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("Warning: "))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_shows_the_warnings_and_the_seven_day_denial() {
    let (c, _op) = setup().await;
    let (ns, apis, _sim) = desk_namespace(&c, "flags-warn", SimulatorOptions::default()).await;
    let ten_hours = dry_run(&c, &desk_yaml(&ns, "ten-hours", "{timeoutMs: 36000000}"));
    assert!(ten_hours.success, "{}", ten_hours.stderr);
    let seen = warnings(&ten_hours);
    assert!(
        seen.iter()
            .any(|w| w.starts_with("policy \"long-session-warning-8h\": ")),
        "{}",
        ten_hours.stderr
    );
    assert!(
        !seen.iter().any(|w| w.contains("longer than 24h")),
        "{}",
        ten_hours.stderr
    );

    let a_day_and_more = dry_run(&c, &desk_yaml(&ns, "long", "{timeoutMs: 90000000}"));
    assert!(a_day_and_more.success, "{}", a_day_and_more.stderr);
    assert!(
        warnings(&a_day_and_more)
            .iter()
            .any(|w| w.starts_with("spec.timeoutMs is 25h") && w.contains("longer than 24h")),
        "{}",
        a_day_and_more.stderr
    );

    // Eight days: within --max-timeout-ms (30 days), over the shipped 7-day policy.
    let eight_days = dry_run(&c, &desk_yaml(&ns, "eight-days", "{timeoutMs: 691200000}"));
    assert!(!eight_days.success, "admitted: {}", eight_days.stdout);
    assert!(
        eight_days.stderr.contains("spec.timeoutMs")
            && eight_days.stderr.contains("policy \"max-timeout-7d\""),
        "{}",
        eight_days.stderr
    );

    // On UPDATE: a timeoutAction removed, and a lifetime that already ended.
    apply(&c, &desk_yaml(&ns, "started", "{timeoutMs: 600000}"));
    let started = eventually(Duration::from_secs(60), "a startTime", || async {
        apis.desks.get("started").await.ok()?.status?.start_time
    })
    .await;
    // A lifetime of 1 s must have ended by the time the patch is judged.
    let ended = epoch_ms(&started) + 1_000;
    tokio::time::sleep(Duration::from_millis(
        (ended - now_ms()).max(0) as u64 + 500,
    ))
    .await;
    let patched = c
        .kubectl()
        .run(
            &[
                "patch",
                "cd",
                "started",
                "-n",
                &ns,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/spec/timeoutAction"},{"op":"replace","path":"/spec/timeoutMs","value":1000}]"#,
            ],
            None,
        )
        .expect("kubectl");
    assert!(patched.success, "{}", patched.stderr);
    let seen = warnings(&patched);
    assert!(
        seen.iter()
            .any(|w| w.starts_with("spec.timeoutAction is not set")),
        "{}",
        patched.stderr
    );
    assert!(
        seen.iter()
            .any(|w| w.starts_with("spec.timeoutMs: the desktop started at")
                && w.ends_with("it will time out right away")),
        "{}",
        patched.stderr
    );
}

/// A well-formed review of `bytes` bytes (most of them one long string): cheap to parse,
/// so only the body cap can refuse it.
fn padded_review(bytes: usize) -> Vec<u8> {
    let head = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"big","kind":{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"},"resource":{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"},"name":"d","namespace":"n","operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk","metadata":{"name":"d","namespace":"n","annotations":{"pad":""#;
    let tail = r#""}},"spec":{}}}}"#;
    let mut body = head.as_bytes().to_vec();
    body.resize(bytes - tail.len(), b'x');
    body.extend_from_slice(tail.as_bytes());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_port_refuses_oversized_bodies_and_answers_non_reviews_400() {
    let (c, op) = setup().await;
    let secret = eventually(Duration::from_secs(30), "the TLS Secret", || async {
        tls_secret(&c, TLS_SECRET).await
    })
    .await;
    let ca = secret_text(&secret, "ca.crt");
    let too_large = || {
        metric_sample(
            &op.metrics(),
            r#"cyberdesk_webhook_connections_rejected_total{reason="too_large"}"#,
        )
    };
    let before = too_large().expect("the too_large series");

    // Just under the cap, the same review is read and answered.
    let (code, body) = post(
        &ca,
        op.webhook,
        "/mutate",
        &padded_review(4 * 1024 * 1024 - 64),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(
        &ca,
        op.webhook,
        "/mutate",
        &padded_review(4 * 1024 * 1024 + 1),
    )
    .await;
    assert_eq!(code, 413, "{body}");
    assert_eq!(too_large(), Some(before + 1.0));

    for (path, body) in [
        (
            "/validate",
            &br#"{"kind":"ConfigMap","apiVersion":"v1","data":{}}"#[..],
        ),
        ("/mutate", &b"not json at all"[..]),
        (
            "/validate",
            &br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#
                [..],
        ),
    ] {
        let (code, answer) = post(&ca, op.webhook, path, body).await;
        assert_eq!(
            code,
            400,
            "{path} {}: {answer}",
            String::from_utf8_lossy(body)
        );
        let error: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("a 400 that is not JSON ({e}): {answer}"));
        assert!(error["error"].is_string(), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_healthz_answer_ok() {
    let (_c, op) = setup().await;
    for path in ["/livez", "/healthz"] {
        let answer = http_get(op.admin, path).expect(path);
        assert_eq!(answer, (200, "ok".to_string()), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_json_and_names_the_reconcile_concurrency() {
    let (_c, op) = setup().await;
    let log = eventually(Duration::from_secs(30), "the controller's start", || {
        let log = op.log();
        std::future::ready(log.contains("max_concurrent_reconciles").then_some(log))
    })
    .await;
    let mut concurrency = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line}"
        );
        if let Some(n) = value["max_concurrent_reconciles"].as_u64() {
            concurrency = Some(n);
        }
    }
    assert_eq!(concurrency, Some(MAX_CONCURRENT_RECONCILES), "{log}");
}

/// Re-applies the shipped RBAC when dropped, so a failed test leaves it whole.
struct RestoreRbac(Cluster);

impl Drop for RestoreRbac {
    fn drop(&mut self) {
        install_operator_rbac(&self.0);
    }
}

fn desk_with_secret(ns: &str, name: &str) -> String {
    desk_yaml(
        ns,
        name,
        "{timeoutMs: 600000, userDataSecretRef: {name: creds, key: userdata}}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subject_access_review_that_fails_denies_the_desk() {
    let (c, _op) = setup().await;
    let client = c.client().await;
    let ns = cyberdesk_integration::cluster::namespace(&client, "flags-sar").await;
    wait_webhooks_active(&c, &ns).await;
    // Every user below may do anything, so only a failed review can deny them.
    let user = |n: usize| {
        c.kubectl()
            .as_user(&format!("sar-user-{n}"), &["system:masters"])
    };
    let admitted = user(0)
        .apply(&desk_with_secret(&ns, "before"), &["--dry-run=server"])
        .expect("kubectl");
    assert!(admitted.success, "{}", admitted.stderr);

    // An admin takes away the operator's right to create SubjectAccessReviews.
    let restore = RestoreRbac(c.clone());
    let role = c
        .kubectl()
        .run(
            &["get", "clusterrole", "cyberdesk-operator", "-o", "json"],
            None,
        )
        .expect("kubectl")
        .ok()
        .expect("the ClusterRole");
    let mut role: serde_json::Value = serde_json::from_str(&role).expect("JSON");
    let rules = role["rules"].as_array_mut().expect("rules");
    let before = rules.len();
    rules.retain(|r| !r["resources"].to_string().contains("subjectaccessreviews"));
    assert_eq!(rules.len(), before - 1, "{role}");
    let replaced = c
        .kubectl()
        .run(&["replace", "-f", "-"], Some(&role.to_string()))
        .expect("kubectl");
    assert!(replaced.success, "{}", replaced.stderr);

    let mut n = 0;
    let denied = eventually(Duration::from_secs(30), "a denial", || {
        n += 1;
        let out = user(n)
            .apply(&desk_with_secret(&ns, "after"), &["--dry-run=server"])
            .expect("kubectl");
        std::future::ready((!out.success).then_some(out))
    })
    .await;
    for part in [
        "spec.userDataSecretRef.name",
        "could not check that user",
        "SubjectAccessReview failed",
        "refused to be safe, try again",
    ] {
        assert!(
            denied.stderr.contains(part),
            "no {part:?}: {}",
            denied.stderr
        );
    }
    drop(restore);
    eventually(Duration::from_secs(30), "admitted again", || {
        n += 1;
        let out = user(n)
            .apply(&desk_with_secret(&ns, "restored"), &["--dry-run=server"])
            .expect("kubectl");
        std::future::ready(out.success.then_some(()))
    })
    .await;
}
