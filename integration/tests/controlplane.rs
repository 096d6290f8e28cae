//! The launcher gives a real, working kube-apiserver: version, CRDs, watches, kubectl and
//! webhooks called over TLS by URL — the paths the operator's own tests rely on.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use cyberdesk_integration::cluster::{cluster, namespace};
use cyberdesk_integration::controlplane::TestCa;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_1_35() {
    let client = cluster().client().await;
    let info = client.apiserver_version().await.expect("/version");
    assert_eq!(info.major, "1");
    assert_eq!(info.minor, "35");
    assert!(
        info.git_version.starts_with("v1.35."),
        "gitVersion {}",
        info.git_version
    );
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.test.cyberdesk.io"},
        "spec": {
            "group": "test.cyberdesk.io",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}
                }}}
            }]
        }
    }))
    .expect("crd literal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_established_and_objects_watched() {
    let client = cluster().client().await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = widget_crd();
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create crd: {e}"),
    }
    let established = await_condition(
        crds.clone(),
        "widgets.test.cyberdesk.io",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .expect("CRD established in time")
        .expect("watch CRD");

    let ns = namespace(&client, "crd").await;
    let gvk = GroupVersionKind::gvk("test.cyberdesk.io", "v1", "Widget");
    let ar = ApiResource::from_gvk(&gvk);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);

    let mut events = watcher(widgets.clone(), watcher::Config::default()).boxed();
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.cyberdesk.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"size": 3}
    }))
    .expect("widget literal");
    widgets
        .create(&PostParams::default(), &obj)
        .await
        .expect("create widget");

    let seen = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.try_next().await.expect("watch stream") {
            if let watcher::Event::Apply(o) | watcher::Event::InitApply(o) = ev
                && o.metadata.name.as_deref() == Some("w1")
            {
                return o.data["spec"]["size"].clone();
            }
        }
        serde_json::Value::Null
    })
    .await
    .expect("widget seen by the watch");
    assert_eq!(seen, json!(3));

    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .expect("delete widget");
    let deleted = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = events.try_next().await.expect("watch stream") {
            if let watcher::Event::Delete(o) = ev
                && o.metadata.name.as_deref() == Some("w1")
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("deletion seen by the watch");
    assert!(deleted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_reaches_the_apiserver() {
    let c = cluster();
    let kubectl = c.kubectl();
    let readyz = kubectl
        .run(&["get", "--raw", "/readyz"], None)
        .expect("run kubectl")
        .ok();
    assert_eq!(readyz.as_deref().map(str::trim), Ok("ok"));

    let client = c.client().await;
    let ns = namespace(&client, "kubectl").await;
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: hello\n  namespace: {ns}\ndata:\n  greeting: hi\n"
    );
    let applied = kubectl
        .apply(&manifest, &[])
        .expect("run kubectl")
        .ok()
        .expect("apply succeeds");
    assert!(applied.contains("configmap/hello created"), "{applied}");
    let cm = Api::<ConfigMap>::namespaced(client, &ns)
        .get("hello")
        .await
        .expect("stored");
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("hi")
    );
}

/// Answers every AdmissionReview with a denial carrying `message`.
async fn serve_denying_webhook(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    message: &'static str,
) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // Read headers, then Content-Length bytes of body.
            let (head_len, body_len) = loop {
                let Ok(n) = tls.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..pos]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (pos + 4, len);
                }
            };
            while buf.len() < head_len + body_len {
                let Ok(n) = tls.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let review: serde_json::Value =
                serde_json::from_slice(&buf[head_len..head_len + body_len]).unwrap_or_default();
            let body = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "response": {"uid": review["request"]["uid"], "allowed": false,
                             "status": {"code": 403, "message": message}}
            })
            .to_string();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_calls_a_webhook_by_url_over_tls() {
    use base64::Engine;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

    let ca = TestCa::new("webhook-test-ca").expect("ca");
    let serving = ca
        .issue_server("webhook", &["127.0.0.1"])
        .expect("serving cert");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert pem");
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).expect("key pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    const MESSAGE: &str = "denied by the cyberdesk test webhook";
    tokio::spawn(serve_denying_webhook(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        MESSAGE,
    ));

    let c = cluster();
    let client = c.client().await;
    let ns = namespace(&client, "webhook").await;
    let vwc_name = format!("deny-test-{ns}");
    let vwc = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": vwc_name},
        "webhooks": [{
            "name": "deny.test.cyberdesk.io",
            "clientConfig": {
                "url": format!("https://127.0.0.1:{port}/validate"),
                "caBundle": base64::engine::general_purpose::STANDARD.encode(ca.cert_pem()),
            },
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
        }]
    });
    let applied = c
        .kubectl()
        .apply(&vwc.to_string(), &[])
        .expect("run kubectl")
        .ok();
    assert!(applied.is_ok(), "{applied:?}");

    // The apiserver picks up new webhook configurations asynchronously; retry briefly.
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let mut last = String::new();
    for attempt in 0..50 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm-{attempt}")}}))
                .expect("configmap literal");
        match cms.create(&PostParams::default(), &cm).await {
            Err(kube::Error::Api(e)) => {
                last = e.message.clone();
                if e.message.contains(MESSAGE) {
                    assert_eq!(e.code, 403);
                    let stored = cms.list(&Default::default()).await.expect("list");
                    assert!(
                        stored
                            .items
                            .iter()
                            .all(|c| c.metadata.name.as_deref() != Some(&format!("cm-{attempt}")))
                    );
                    let _ = c.kubectl().run(
                        &["delete", "validatingwebhookconfiguration", &vwc_name],
                        None,
                    );
                    return;
                }
            }
            Ok(_) => last = "created (webhook not yet active)".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the webhook never denied a create; last answer: {last}");
}
