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
