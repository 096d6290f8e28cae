//! Talking TLS to the operator's webhook port the way the apiserver does.

use std::net::SocketAddr;

/// A TLS client that trusts exactly the CAs in `ca_pem` (the webhook Secret's `ca.crt`),
/// as the apiserver does with a caBundle.
pub fn webhook_tls_client(ca_pem: &str) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in cyberdesk_operator::certs::tls::certs_from_pem(ca_pem).map_err(|e| e.to_string())? {
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// The leaf certificate (DER) the webhook server at `addr` presents, from a handshake that
/// only succeeds when the leaf chains to a CA in `ca_pem` and is valid for 127.0.0.1.
pub async fn served_leaf(ca_pem: &str, addr: SocketAddr) -> Result<Vec<u8>, String> {
    let connector = webhook_tls_client(ca_pem)?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name.to_owned(), tcp)
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| leaf.to_vec())
        .ok_or_else(|| "no certificate presented".to_string())
}

/// Both webhook configurations' caBundles, as text (mutating, validating).
pub async fn published_bundles(c: &crate::cluster::Cluster) -> [String; 2] {
    let client = c.client().await;
    let m: kube::Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        kube::Api::all(client.clone());
    let v: kube::Api<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration> =
        kube::Api::all(client);
    let text = |b: Option<k8s_openapi::ByteString>| {
        b.map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let m = m.get("cyberdesk-mutating").await.expect("mutating");
    let v = v.get("cyberdesk-validating").await.expect("validating");
    [
        text(
            m.webhooks
                .unwrap_or_default()
                .remove(0)
                .client_config
                .ca_bundle,
        ),
        text(
            v.webhooks
                .unwrap_or_default()
                .remove(0)
                .client_config
                .ca_bundle,
        ),
    ]
}

/// `ca.crt` of the webhook TLS Secret, as text.
pub async fn secret_ca(api: &kube::Api<k8s_openapi::api::core::v1::Secret>) -> String {
    let s = api.get("cyberdesk-webhook-tls").await.expect("Secret");
    let bytes = s
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .map(|b| b.0)
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Sets whole data keys of the webhook TLS Secret (PEM text) and its annotations in one
/// merge patch, as someone who may write the Secret would.
pub async fn rewrite_secret(
    api: &kube::Api<k8s_openapi::api::core::v1::Secret>,
    data: &[(&str, &str)],
    annotations: serde_json::Value,
) {
    use base64::Engine;
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            (k.to_string(), encoded.into())
        })
        .collect();
    let patch = serde_json::json!({"metadata": {"annotations": annotations}, "data": data});
    api.patch(
        "cyberdesk-webhook-tls",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .expect("patch Secret");
}

/// A review of exactly `bytes` bytes whose object's spec holds an array of zeros: small on
/// the wire, about 16 times its size once parsed. What a hostile pod sends the webhook.
pub fn zeros_review(bytes: usize) -> Vec<u8> {
    let before = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"bench","kind":{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"},"resource":{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"},"name":"d","namespace":"n","operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk","metadata":{"name":"d","namespace":"n"},"spec":{"padding":"#;
    let after = "}}}}";
    let zeros = (bytes - before.len() - after.len() - 1) / 2;
    let mut body = Vec::with_capacity(bytes);
    body.extend_from_slice(before.as_bytes());
    body.push(b'[');
    for i in 0..zeros {
        body.extend_from_slice(if i == 0 { b"0" } else { b",0" });
    }
    body.push(b']');
    body.extend_from_slice(after.as_bytes());
    // Spaces are valid JSON after the document: exactly `bytes` bytes.
    body.resize(bytes, b' ');
    body
}

/// One `POST path` with `body` on a fresh TLS connection to the webhook server at `addr`
/// (trusting only `ca_pem`, as 127.0.0.1): the status code and the body of the answer.
pub async fn post(ca_pem: &str, addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = webhook_tls_client(ca_pem).expect("TLS client");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let tls = connector.connect(name, tcp).await.expect("handshake");
    let (mut reader, mut writer) = tokio::io::split(tls);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The server may answer before it has read the body (a refusal): read while writing.
    let write = async {
        writer.write_all(head.as_bytes()).await?;
        writer.write_all(body).await?;
        writer.flush().await
    };
    let read = async {
        let mut response = Vec::new();
        reader.read_to_end(&mut response).await.map(|_| response)
    };
    let (_, read) = tokio::join!(write, read);
    let response = String::from_utf8_lossy(&read.expect("an answer")).into_owned();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}
