//! A small HTTP/1.1 server that stands in for the platform's endpoints (the gateway's
//! ready call, Supabase's PostgREST): it records every request whole (method, path and
//! query, headers, body) and answers as a test scripted it for that path: a status code,
//! a sequence of them, or never.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/rest/v1/cyberdesk_instances?id=eq.x`.
    pub target: String,
    /// Header names lowercase.
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status code it was answered with; `None` when it was held unanswered.
    pub answered: Option<u16>,
    /// When it arrived, in ms since the epoch.
    pub at_ms: i64,
}

/// How the server answers requests to one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// These codes in turn, the last one from then on.
    Codes(Vec<u16>),
    /// Never answer (the connection stays open until the client gives up).
    Never,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    scripts: HashMap<String, Reply>,
    /// How paths without a script are answered; `None` is 200.
    fallback: Option<Reply>,
    /// Requests answered so far per path (for `Codes`).
    served: HashMap<String, usize>,
}

/// The server, living as long as the test binary (its runtime is its own thread's).
#[derive(Clone)]
pub struct Recorder {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorder {
    /// Starts the server on a free loopback port; unscripted paths get 200.
    pub fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = state.clone();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(serve(shared, tx));
            })
            .expect("recorder thread");
        let addr = rx.recv().expect("recorder listening");
        Self { addr, state }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers requests whose path (without the query) is `path` with `reply`.
    pub fn script(&self, path: &str, reply: Reply) {
        lock(&self.state).scripts.insert(path.to_string(), reply);
    }

    /// Answers every path without a script of its own with `reply` (`None`: 200 again),
    /// e.g. a whole gateway failing for a while.
    pub fn script_all(&self, reply: Option<Reply>) {
        let mut s = lock(&self.state);
        s.fallback = reply;
        s.served.clear();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// The requests to `path` (query ignored).
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| path_of(&r.target) == path)
            .collect()
    }
}

fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap_or(target)
}

async fn serve(state: Arc<Mutex<State>>, ready: std::sync::mpsc::Sender<SocketAddr>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind recorder");
    let _ = ready.send(listener.local_addr().expect("addr"));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    let path = path_of(&target).to_string();
    let reply = {
        let mut s = lock(&state);
        let n = {
            let served = s.served.entry(path.clone()).or_insert(0);
            *served += 1;
            *served - 1
        };
        let code = match s.scripts.get(&path).or(s.fallback.as_ref()) {
            None => Some(200),
            Some(Reply::Never) => None,
            Some(Reply::Codes(codes)) => codes.get(n).or(codes.last()).copied(),
        };
        s.requests.push(Recorded {
            method,
            target,
            headers,
            body,
            answered: code,
            at_ms: crate::desks::now_ms(),
        });
        code
    };
    let Some(code) = reply else {
        // Hold the request until the client gives up and closes the connection.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        return Ok(Response::new(Full::new(Bytes::new())));
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    Ok(response)
}
