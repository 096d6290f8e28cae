//! A kube client for unit tests whose every request a test function answers, and which
//! records what was asked. No apiserver.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// One request the client sent: method, path (with query) and JSON body (`Null` if none).
#[derive(Clone, Debug)]
pub struct Asked {
    pub method: String,
    pub path: String,
    pub body: Value,
}

/// Everything the client was asked, in order.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<Asked>>>);

impl Log {
    /// The requests whose path contains `part` (event writes and the like filtered out).
    pub fn to(&self, part: &str) -> Vec<Asked> {
        let asked = self.0.lock().expect("log");
        asked
            .iter()
            .filter(|a| a.path.contains(part))
            .cloned()
            .collect()
    }
}

/// A client whose answers come from `answer(request)`: the status code and JSON body.
pub fn client(
    answer: impl Fn(&Asked) -> (u16, Value) + Send + Sync + 'static,
) -> (kube::Client, Log) {
    let log = Log::default();
    let answer = Arc::new(answer);
    let seen = log.clone();
    let service = tower::service_fn(move |req: Request<Body>| {
        let answer = answer.clone();
        let seen = seen.clone();
        async move {
            let method = req.method().to_string();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let bytes = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let asked = Asked { method, path, body };
            let (code, reply) = answer(&asked);
            seen.0.lock().expect("log").push(asked);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).expect("json")))
                .expect("response");
            Ok::<_, Infallible>(response)
        }
    });
    (kube::Client::new(service, "default"), log)
}

/// A `metav1.Status` refusal with `code`, as the apiserver sends it.
pub fn refusal(code: u16, reason: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "message": format!("refused: {reason}"), "reason": reason, "code": code}),
    )
}
