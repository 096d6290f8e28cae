//! The one HTTP client for notifications: HTTP/1.1 over plain TCP or TLS (rustls, the
//! system's roots), every attempt bounded in time, the answer's body read and dropped.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest answer body read before the connection is dropped.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// One request to make.
#[derive(Clone)]
pub struct Outgoing {
    pub method: Method,
    pub url: String,
    /// Header name and value; values may be secret and are never logged.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Header values may be keys: only their names are shown.
impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("invalid request: {0}")]
    Request(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Transport(String),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the notification HTTP client: {0}")]
pub struct ClientError(String);

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    /// A client whose every attempt (connect, request, answer) ends after `timeout`.
    pub fn new(timeout: Duration) -> Result<Self, ClientError> {
        let provider = rustls::crypto::ring::default_provider();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| ClientError(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            timeout,
        })
    }

    /// Sends `req` once; the answer's HTTP status code.
    pub async fn send(&self, req: &Outgoing) -> Result<u16, SendError> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.url.as_str());
        for (name, value) in &req.headers {
            builder = builder.header(*name, value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body.clone())))
            .map_err(|e| SendError::Request(e.to_string()))?;
        let exchange = async {
            let answer = self
                .client
                .request(request)
                .await
                .map_err(|e| SendError::Transport(describe(&e)))?;
            let code = answer.status().as_u16();
            // Read (a bounded part of) the body so the connection can be reused.
            let limited = http_body_util::Limited::new(answer.into_body(), MAX_ANSWER_BYTES);
            let _ = limited.collect().await;
            Ok(code)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| SendError::Timeout(self.timeout))?
    }
}

/// The error and its causes in one line (hyper's own message alone says little).
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
