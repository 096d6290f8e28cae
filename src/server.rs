//! The HTTPS webhook server: axum routes over a tokio-rustls accept loop, so the serving
//! certificate comes from a resolver that can swap it without a restart.
//!
//! With `failurePolicy: Fail` a starved webhook blocks every Cyberdesk write in the cluster,
//! the operator's own finalizer removals included, so every connection is bounded: a cap on
//! open connections, a TLS handshake timeout, a header read timeout from the first byte of
//! a request (from the end of the TLS handshake for the first one), an idle keep-alive
//! timeout between requests, and a timeout for reading the body and answering. One watchdog per connection enforces
//! the last three: a timer per request would cost every admission more than the checks.
//! Memory is bounded too: a cap on connections from one source address, and one budget for
//! the bytes of every request in flight and what parsing them takes ([`budget`]).

pub mod budget;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::admission::cost::{CostError, parse_cost};
use crate::admission::review_json;
use crate::admission::{Admission, Webhook};
use crate::metrics::Metrics;
use crate::server::budget::{MemoryBudget, Share};

/// Largest AdmissionReview accepted. An object is at most ~1.5 MiB in etcd and a review
/// carries the object and the old object.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The memory budget for requests in flight when no flag sets one.
pub const DEFAULT_MEMORY_BUDGET: usize = 32 * 1024 * 1024;

/// How long each stage of a connection may take, and how many may be open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    pub handshake_timeout: Duration,
    /// From the first byte of a request (from the end of the TLS handshake for the first)
    /// to its last header.
    pub header_read_timeout: Duration,
    /// Between the end of a response and the first byte of the next request.
    pub idle_timeout: Duration,
    /// From the last header to the end of the answer: reading the body and reviewing it.
    pub request_timeout: Duration,
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_source: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_connections: 1024,
            max_connections_per_source: 256,
        }
    }
}

/// The webhook routes with the default memory budget.
pub fn router(admission: Arc<Admission>) -> Router {
    router_with_budget(admission, MemoryBudget::new(DEFAULT_MEMORY_BUDGET))
}

/// What every request shares.
struct Webhooks {
    admission: Arc<Admission>,
    budget: Arc<MemoryBudget>,
}

pub fn router_with_budget(admission: Arc<Admission>, budget: Arc<MemoryBudget>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate", post(validate))
        .with_state(Arc::new(Webhooks { admission, budget }))
}

async fn mutate(State(w): State<Arc<Webhooks>>, req: Request<Body>) -> Response {
    admit(&w, Webhook::Mutate, req).await
}

async fn validate(State(w): State<Arc<Webhooks>>, req: Request<Body>) -> Response {
    admit(&w, Webhook::Validate, req).await
}

/// Why a request was refused before its review.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// It can never be taken: 413.
    TooLarge(String),
    /// Not now: 503, try again in a second.
    Busy(String),
    /// The body could not be read: 400.
    Unreadable(String),
}

/// Reads the body and charges it and its parse to the budget, then answers the review. A
/// request the budget cannot hold is refused at once: 503 with `Retry-After`, since it is
/// the server that is full, not this client that asked too often.
async fn admit(w: &Webhooks, webhook: Webhook, req: Request<Body>) -> Response {
    let mut share = w.budget.share();
    let body = match read_body(req, &w.budget, &mut share).await {
        Ok(body) => body,
        Err(refusal) => return refuse(&w.admission.metrics, refusal),
    };
    let room = w.budget.largest_request().saturating_sub(share.held());
    // Broken JSON is parsed as far as it goes before the review says what is wrong (a 400):
    // that much is charged too.
    let cost = match parse_cost(&body, room) {
        Ok(cost) | Err(CostError::Json { counted: cost, .. }) => cost,
        Err(CostError::OverLimit { .. }) => {
            return refuse(
                &w.admission.metrics,
                Refusal::TooLarge(format!(
                    "parsing this review would take more than the {} MiB of memory one request may hold",
                    mib(w.budget.largest_request())
                )),
            );
        }
    };
    if !share.try_grow(cost) {
        return refuse(
            &w.admission.metrics,
            Refusal::Busy(format!(
                "the webhook server is at its memory budget ({} MiB in flight); try again",
                mib(w.budget.used())
            )),
        );
    }
    answer(&w.admission, webhook, &body).await
}

fn mib(bytes: usize) -> usize {
    bytes.div_ceil(1024 * 1024)
}

fn content_length(headers: &HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The body, held in `share`: the declared length is charged before a byte is read, so an
/// oversized or unaffordable request is refused without reading it.
async fn read_body(
    req: Request<Body>,
    budget: &MemoryBudget,
    share: &mut Share,
) -> Result<Vec<u8>, Refusal> {
    use http_body_util::BodyExt;
    let too_large = || {
        Refusal::TooLarge(format!(
            "the body is larger than {} MiB",
            mib(MAX_BODY_BYTES)
        ))
    };
    let busy = || {
        Refusal::Busy(format!(
            "the webhook server is at its memory budget ({} MiB in flight); try again",
            mib(budget.used())
        ))
    };
    let declared = content_length(req.headers());
    if let Some(len) = declared {
        if len > MAX_BODY_BYTES {
            return Err(too_large());
        }
        if !share.try_grow(len) {
            return Err(busy());
        }
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    let mut incoming = req.into_body();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| Refusal::Unreadable(format!("cannot read the body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if body.len() + data.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        // Without a declared length, each chunk is charged as it arrives.
        let unpaid = (body.len() + data.len()).saturating_sub(share.held());
        if unpaid > 0 && !share.try_grow(unpaid) {
            return Err(busy());
        }
        body.extend_from_slice(&data);
    }
    Ok(body)
}

fn refuse(metrics: &Metrics, refusal: Refusal) -> Response {
    let (status, reason, message) = match refusal {
        Refusal::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m),
        Refusal::Busy(m) => (StatusCode::SERVICE_UNAVAILABLE, "memory_budget", m),
        Refusal::Unreadable(m) => {
            let body = serde_json::json!({ "error": m }).to_string();
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
        }
    };
    reject(metrics, reason);
    let body = serde_json::json!({ "error": message }).to_string();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    response
}

async fn answer(admission: &Admission, webhook: Webhook, body: &[u8]) -> Response {
    match admission.review(webhook, body).await {
        Ok(review) => match review_json(review) {
            Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode the review: {e}"),
            )
                .into_response(),
        },
        Err(bad) => {
            let body = serde_json::json!({"error": bad.0}).to_string();
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for the webhook server: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// A listening socket not yet tied to any runtime, for [`own_runtime`].
pub fn bind_std(addr: SocketAddr) -> Result<std::net::TcpListener, ServerError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| ServerError::Bind { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind { addr, source })?;
    Ok(listener)
}

/// Worker threads of the webhook server's own runtime.
const WEBHOOK_WORKERS: usize = 2;

/// A runtime for the webhook server alone: review work (JSON parsing, policy evaluation)
/// under a flood then competes with the controller only for CPU, fairly, through the OS
/// scheduler, and never holds up its Lease renewals and watches on the main runtime.
pub fn own_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WEBHOOK_WORKERS)
        .thread_name("webhook")
        .enable_all()
        .build()
}

/// Counts a refusal, and logs it at most every [`LOG_EVERY`] per process so a flood does not
/// become a flood of log lines.
fn reject(metrics: &Metrics, reason: &'static str) {
    metrics
        .webhook_connections_rejected
        .with_label_values(&[reason])
        .inc();
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    let now = START.get_or_init(Instant::now).elapsed().as_secs() + 1;
    let last = LAST_LOG.load(Ordering::Relaxed);
    if now >= last + LOG_EVERY.as_secs()
        && LAST_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            reason,
            "webhook server refused a connection or request (counted in cyberdesk_webhook_connections_rejected_total; further refusals are not logged for a while)"
        );
    }
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a connection is, for its watchdog.
const READING_HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

struct Activity {
    state: AtomicU8,
    /// Milliseconds since `origin` when `state` was entered.
    since: AtomicU64,
    origin: Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: AtomicU8::new(READING_HEAD),
            since: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn enter(&self, state: u8) {
        self.since.store(self.now_ms(), Ordering::Relaxed);
        self.state.store(state, Ordering::Release);
    }

    /// Bytes arrived: an idle connection starts reading the next request's head.
    fn on_read(&self) {
        if self
            .state
            .compare_exchange(IDLE, READING_HEAD, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The limit this connection has run past, if any: `Some(Some(reason))` counts as a
    /// refusal, `Some(None)` is an ordinary idle close.
    fn expired(&self, limits: &ServerLimits) -> Option<Option<&'static str>> {
        let waited = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.since.load(Ordering::Relaxed)),
        );
        match self.state.load(Ordering::Acquire) {
            READING_HEAD if waited > limits.header_read_timeout => Some(Some("header_timeout")),
            BUSY if waited > limits.request_timeout => Some(Some("request_timeout")),
            IDLE if waited > limits.idle_timeout => Some(None),
            _ => None,
        }
    }
}

/// The TLS stream, noting when bytes arrive.
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How often each connection's watchdog looks at it.
const WATCHDOG_TICK: Duration = Duration::from_millis(250);

/// How the server's connections ended after shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every connection finished within the drain period.
    Complete,
    /// Some were still open when the period ran out; the process must not report a clean exit.
    Abandoned,
}

/// Serves until `shutdown`, then lets in-flight requests finish for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    limits: ServerLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
    drain: Duration,
) -> Drain {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let sources = Arc::new(Sources {
        cap: limits.max_connections_per_source,
        open: Mutex::new(HashMap::new()),
    });
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // One source cannot take every connection: past its cap, closed at once.
        let Some(source) = sources.open(peer.ip()) else {
            reject(&metrics, "per_source");
            drop(tcp);
            continue;
        };
        // Full: close at once rather than queue, so a flood cannot park legitimate
        // connections behind it; the apiserver retries.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            reject(&metrics, "capacity");
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slots = (slot, source);
            metrics.webhook_connections_open.inc();
            serve_connection(tcp, peer, acceptor, app, limits, &metrics, watcher).await;
            metrics.webhook_connections_open.dec();
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?drain,
            "webhook connections still open after the drain period"
        );
        return Drain::Abandoned;
    }
    Drain::Complete
}

/// Connections open now, by source address.
struct Sources {
    cap: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection from `ip`; counted until dropped.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
}

impl Sources {
    /// A slot for one more connection from `ip`, unless it has `cap` open already.
    fn open(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(SourceSlot {
            sources: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    limits: ServerLimits,
    metrics: &Metrics,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            reject(metrics, "handshake_timeout");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tls,
        activity: activity.clone(),
    });
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let activity = service_activity.clone();
        activity.enter(BUSY);
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await;
            activity.enter(IDLE);
            response
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    let conn = watcher.watch(builder.serve_connection(io, service).into_owned());
    let mut conn = std::pin::pin!(conn);
    let mut tick = tokio::time::interval(WATCHDOG_TICK);
    loop {
        tokio::select! {
            ended = &mut conn => {
                if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tick.tick() => {
                if let Some(reason) = activity.expired(&limits) {
                    if let Some(reason) = reason {
                        reject(metrics, reason);
                    }
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}
