//! `--webhook-client-ca`: the webhook server takes only clients whose certificate a CA in
//! that file signed. The control plane is started the way an admin configures the
//! apiserver for it (an AdmissionConfiguration whose kubeconfig gives the apiserver a
//! client certificate for the webhook's host): its admissions pass, and a review sent
//! without a certificate, or with one from another CA, is refused at the TLS layer.

use std::sync::Arc;
use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, install_everything, namespace};
use cyberdesk_integration::controlplane::{ControlPlane, Options, PemPair, TestCa};
use cyberdesk_integration::desks::{desk_yaml, jsonpath, wait_webhooks_active};
use cyberdesk_integration::operator::{OperatorProcess, free_addr, register_webhooks};
use cyberdesk_integration::wait::eventually;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":{"group":"cyberdesk.io","version":"v1alpha1","kind":"Cyberdesk"},"resource":{"group":"cyberdesk.io","version":"v1alpha1","resource":"cyberdesks"},"name":"d","namespace":"n","operation":"CREATE","userInfo":{"username":"u"},"object":{"apiVersion":"cyberdesk.io/v1alpha1","kind":"Cyberdesk","metadata":{"name":"d","namespace":"n"},"spec":{}}}}"#;

/// A TLS client that trusts the webhook's CA and presents `identity`, if any.
fn client(server_ca: &str, identity: Option<&PemPair>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(server_ca.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("client cert PEM");
            let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key PEM");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    };
    TlsConnector::from(Arc::new(config))
}

/// One review; the HTTP status line, or the error that ended the exchange.
async fn review(connector: &TlsConnector, addr: std::net::SocketAddr) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").expect("name").to_owned();
    let mut s = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!(
        "POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{REVIEW}",
        REVIEW.len()
    );
    // In TLS 1.3 the server judges the client's certificate after the client thinks the
    // handshake is done: a refusal shows as an alert on the first read or write.
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(response.lines().next().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_client_ca_the_apiserver_gets_through_and_nobody_else() {
    let webhook = free_addr();
    let cp = ControlPlane::start(&Options {
        webhook_client_cert_for: vec![webhook.to_string()],
        ..Options::default()
    })
    .expect("control plane");
    let c = Cluster::of(&cp);
    let client_ca = cp
        .webhook_client_ca_path()
        .expect("the apiserver's webhook client CA")
        .to_path_buf();
    install_everything(&c).await;
    register_webhooks(&c, webhook).expect("webhook configurations");
    let op = OperatorProcess::start_on(
        &c,
        "client-auth",
        webhook,
        &[
            "--extra-san=127.0.0.1".to_string(),
            "--leader-election=false".to_string(),
            "--policy-dir=/nonexistent".to_string(),
            format!("--webhook-client-ca={}", client_ca.display()),
        ],
    );
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());

    // The apiserver's admissions pass: a desk created with kubectl is defaulted.
    let ns = namespace(&c.client().await, "client-auth").await;
    wait_webhooks_active(&c, &ns).await;
    let created = c
        .kubectl()
        .apply(&desk_yaml(&ns, "authenticated", "{}"), &[])
        .expect("kubectl");
    assert!(created.success, "{}", created.stderr);
    assert_eq!(
        jsonpath(&c, &ns, "cyberdesk/authenticated", "{.spec.timeoutMs}"),
        "3600000"
    );
    assert_eq!(
        jsonpath(
            &c,
            &ns,
            "cyberdesk/authenticated",
            "{.metadata.finalizers[0]}"
        ),
        "cyberdesk.io/vm-cleanup"
    );

    let secrets: Api<Secret> = Api::namespaced(c.client().await, "cyberdesk-system");
    let server_ca = eventually(Duration::from_secs(20), "the webhook CA", || async {
        let s = secrets.get_opt("cyberdesk-webhook-tls").await.ok()??;
        String::from_utf8(s.data?.get("ca.crt")?.0.clone()).ok()
    })
    .await;

    // Without a client certificate: refused in the TLS layer, no HTTP answer.
    let anonymous = review(&client(&server_ca, None), webhook).await;
    eprintln!("without a client certificate: {anonymous:?}");
    let refusal = anonymous.expect_err("a review without a client certificate was answered");
    assert!(refusal.contains("alert"), "{refusal}");

    // With a certificate from another CA: refused the same way.
    let stranger = TestCa::new("someone-else")
        .expect("CA")
        .issue_client("kube-apiserver-webhook-client", &[])
        .expect("client cert");
    let foreign = review(&client(&server_ca, Some(&stranger)), webhook).await;
    eprintln!("with another CA's client certificate: {foreign:?}");
    let refusal = foreign.expect_err("a review with another CA's certificate was answered");
    assert!(refusal.contains("alert"), "{refusal}");
    drop(op);
}
