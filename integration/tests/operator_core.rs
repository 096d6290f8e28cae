//! The generated CRD and the kustomize manifests, exercised through kubectl against the
//! real apiserver as a user or cluster admin would.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, cluster, namespace};
use cyberdesk_integration::workspace::{operator_output, repo_path};
use tokio::sync::OnceCell;

/// `cyberdesk-operator crd | kubectl apply --server-side -f -`, once per test binary.
async fn install_crd(c: &Cluster) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let out = operator_output(&["crd"]);
        assert!(out.status.success(), "crd subcommand failed");
        let yaml = String::from_utf8(out.stdout).expect("utf-8 crd");
        let applied = c
            .kubectl()
            .apply(&yaml, &["--server-side"])
            .expect("kubectl")
            .ok();
        assert!(applied.is_ok(), "{applied:?}");
        let waited = c
            .kubectl()
            .run(
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=60s",
                    "crd/cyberdesks.cyberdesk.io",
                    "crd/cyberdeskpools.cyberdesk.io",
                ],
                None,
            )
            .expect("kubectl")
            .ok();
        assert!(waited.is_ok(), "{waited:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_shows_field_descriptions() {
    let c = cluster();
    install_crd(&c).await;
    // Discovery of a fresh CRD can lag a moment behind Established.
    let mut last = String::new();
    for _ in 0..50 {
        let out = c
            .kubectl()
            .run(&["explain", "cyberdesk.spec.timeoutMs"], None)
            .expect("kubectl");
        if out.success && out.stdout.contains("milliseconds") {
            return;
        }
        last = format!("{}{}", out.stdout, out.stderr);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("kubectl explain never showed the description: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_validation_rejects_unknown_fields_and_bad_values() {
    let c = cluster();
    install_crd(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "strict").await;
    let unknown = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: d1, namespace: {ns}}}\nspec:\n  timeoutMs: 60000\n  colour: blue\n"
    );
    let out = c
        .kubectl()
        .apply(&unknown, &["--validate=strict"])
        .expect("kubectl");
    assert!(!out.success, "unknown field accepted: {}", out.stdout);
    assert!(out.stderr.contains("colour"), "{}", out.stderr);

    let too_short = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: d2, namespace: {ns}}}\nspec:\n  timeoutMs: 10\n"
    );
    let out = c.kubectl().apply(&too_short, &[]).expect("kubectl");
    assert!(!out.success);
    assert!(out.stderr.contains("spec.timeoutMs"), "{}", out.stderr);

    let bad_action = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: d3, namespace: {ns}}}\nspec:\n  timeoutAction: Explode\n"
    );
    let out = c.kubectl().apply(&bad_action, &[]).expect("kubectl");
    assert!(!out.success);
    assert!(out.stderr.contains("spec.timeoutAction"), "{}", out.stderr);

    let nothing = c
        .kubectl()
        .run(&["get", "cyberdesks", "-n", &ns, "-o", "name"], None)
        .expect("kubectl");
    assert_eq!(nothing.stdout.trim(), "", "rejected objects were stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_shows_printer_columns() {
    let c = cluster();
    install_crd(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "columns").await;
    let desk = format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata: {{name: desk, namespace: {ns}}}\nspec:\n  timeoutMs: 60000\n"
    );
    let applied = c
        .kubectl()
        .apply(&desk, &["--validate=strict"])
        .expect("kubectl")
        .ok();
    assert!(applied.is_ok(), "{applied:?}");
    let status = serde_json::json!({"status": {"phase": "Running", "virtualMachineRef": "cyberdesk-desk",
        "ipAddress": "10.0.0.7", "expiryTime": "2030-01-01T00:00:00Z"}});
    let patched = c
        .kubectl()
        .run(
            &[
                "patch",
                "cd",
                "desk",
                "-n",
                &ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &status.to_string(),
            ],
            None,
        )
        .expect("kubectl")
        .ok();
    assert!(patched.is_ok(), "{patched:?}");
    let table = c
        .kubectl()
        .run(&["get", "cd", "-n", &ns], None)
        .expect("kubectl")
        .ok()
        .expect("get cd");
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "PHASE", "VM", "IP", "EXPIRY", "AGE"]);
    assert!(
        table.contains("Running") && table.contains("cyberdesk-desk") && table.contains("10.0.0.7"),
        "{table}"
    );
    let short = c
        .kubectl()
        .run(&["get", "cds", "-n", &ns, "-o", "name"], None)
        .expect("kubectl")
        .ok();
    assert_eq!(
        short.as_deref().map(str::trim),
        Ok("cyberdesk.cyberdesk.io/desk")
    );
}

/// Minimal CRDs for the third-party kinds the overlays use (cert-manager, Prometheus
/// operator), so a server-side dry run can resolve them as in a cluster that has them.
fn third_party_crd(group: &str, kind: &str, plural: &str, version: &str) -> String {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": plural, "kind": kind, "singular": kind.to_lowercase()},
                 "versions": [{"name": version, "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kustomize_base_and_overlays_pass_a_server_side_dry_run() {
    let c = cluster();
    install_crd(&c).await;
    let kubectl = c.kubectl();
    for (group, kind, plural, version) in [
        ("cert-manager.io", "Certificate", "certificates", "v1"),
        ("cert-manager.io", "Issuer", "issuers", "v1"),
        (
            "monitoring.coreos.com",
            "ServiceMonitor",
            "servicemonitors",
            "v1",
        ),
        (
            "monitoring.coreos.com",
            "PrometheusRule",
            "prometheusrules",
            "v1",
        ),
    ] {
        let applied = kubectl
            .apply(&third_party_crd(group, kind, plural, version), &[])
            .expect("kubectl")
            .ok();
        assert!(applied.is_ok(), "{applied:?}");
        let name = format!("crd/{plural}.{group}");
        let _ = kubectl.run(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &name,
            ],
            None,
        );
    }
    // A dry run creates nothing, so the namespace the objects go into must exist for real.
    let _ = kubectl.run(&["create", "namespace", "cyberdesk-system"], None);

    for dir in [
        "manifests/base",
        "manifests/overlays/dev",
        "manifests/overlays/cert-manager",
        "manifests/overlays/inline-user-data",
        "manifests/monitoring",
    ] {
        let path = repo_path(dir);
        let rendered = kubectl
            .run(&["kustomize", &path.display().to_string()], None)
            .expect("kubectl")
            .ok()
            .unwrap_or_else(|e| panic!("kustomize {dir}: {e}"));
        let mut last = String::new();
        let mut passed = false;
        // Discovery of the just-installed CRDs may lag; retry a little.
        for _ in 0..30 {
            let out = kubectl
                .apply(&rendered, &["--dry-run=server"])
                .expect("kubectl");
            if out.success {
                passed = true;
                break;
            }
            last = out.stderr;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(passed, "{dir} failed a server-side dry run: {last}");
    }
}

/// `make release-manifests VERSION=0.2.0` writes one file, and the apiserver accepts all of
/// it in a server-side dry run; the operator's image carries the version's tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_manifests_render_one_file_the_apiserver_accepts() {
    let c = cluster();
    install_crd(&c).await;
    let kubectl = c.kubectl();
    let dist = c.dir.join("dist");
    let make = std::process::Command::new("make")
        .current_dir(repo_path(""))
        .args(["-s", "release-manifests", "VERSION=0.2.0"])
        .arg(format!("DIST={}", dist.display()))
        .arg(format!("KUBECTL={}", kubectl.binary().display()))
        .output()
        .expect("make");
    assert!(
        make.status.success(),
        "make release-manifests: {}",
        String::from_utf8_lossy(&make.stderr)
    );
    let file = dist.join("cyberdesk-operator-0.2.0.yaml");
    let rendered = std::fs::read_to_string(&file).expect("the release manifest");
    assert!(
        rendered.contains("image: ghcr.io/cyberdesk/cyberdesk-operator:0.2.0\n"),
        "{rendered}"
    );
    let _ = kubectl.run(&["create", "namespace", "cyberdesk-system"], None);
    let path = file.display().to_string();
    let mut last = String::new();
    for _ in 0..30 {
        let out = kubectl
            .run(&["apply", "--dry-run=server", "-f", &path], None)
            .expect("kubectl");
        if out.success {
            return;
        }
        last = out.stderr;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    panic!("the release manifest failed a server-side dry run: {last}");
}

/// A release needs a version: `make release-manifests` without one writes nothing.
#[test]
fn release_manifests_refuse_a_missing_or_malformed_version() {
    for version in ["", "latest", "v0.2.0"] {
        let dist = std::env::temp_dir().join(format!("cyberdesk-dist-{}", std::process::id()));
        let make = std::process::Command::new("make")
            .current_dir(repo_path(""))
            .args(["-s", "release-manifests"])
            .arg(format!("VERSION={version}"))
            .arg(format!("DIST={}", dist.display()))
            .arg("KUBECTL=/nonexistent/kubectl")
            .output()
            .expect("make");
        assert_eq!(make.status.code(), Some(2), "VERSION={version:?}");
        assert!(
            !dist.exists(),
            "VERSION={version:?} wrote {}",
            dist.display()
        );
    }
}
