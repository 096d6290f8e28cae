//! The controllers' shared parts for unit tests: a kube client whose every request a test
//! function answers (and which records what was asked), caches that are filled, the
//! built-in template, and fresh metrics. No apiserver.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::BodyExt;
use hyper::{Request, Response};
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

use crate::catalog::Catalog;
use crate::controller::cache::{Caches, Lists};
use crate::controller::context::Shared;
use crate::controller::records::{RecordWriter, VmRecord, VmiRecord, record_store};
use crate::events::{Announcer, Lanes};
use crate::metrics::Metrics;
use crate::model::{Placement, VirtualMachine, VirtualMachineInstance};

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

/// The shared parts over `client`, and what keeps them alive.
pub struct World {
    pub shared: Arc<Shared>,
    pub metrics: Metrics,
    // Held so the caches stay filled and events have somewhere to go.
    _vms: RecordWriter<VmRecord>,
    _vmis: RecordWriter<VmiRecord>,
    _pool_lists: tokio::sync::watch::Sender<u64>,
    _lanes: Lanes,
}

/// Shared parts whose caches are filled and empty: a pass reads nothing from them.
pub fn world(client: kube::Client) -> World {
    let metrics = Metrics::new("test", crate::controller::error::ERROR_LABELS).expect("metrics");
    let (desks, _) = reflector::store();
    let (vms, mut vm_writer) = record_store::<VmRecord>();
    let (vmis, mut vmi_writer) = record_store::<VmiRecord>();
    vm_writer.apply(&watcher::Event::<VirtualMachine>::Init);
    vm_writer.apply(&watcher::Event::<VirtualMachine>::InitDone);
    vmi_writer.apply(&watcher::Event::<VirtualMachineInstance>::Init);
    vmi_writer.apply(&watcher::Event::<VirtualMachineInstance>::InitDone);
    let (pools, _) = reflector::store();
    let (pool_lists, lists) = Lists::new();
    pool_lists.send_replace(1);
    let reporter = Reporter {
        controller: "test".into(),
        instance: None,
    };
    let (announcer, lanes) =
        Announcer::start(client.clone(), reporter, metrics.events_dropped.clone());
    let shared = Arc::new(Shared {
        client,
        announcer,
        metrics: metrics.clone(),
        templates: Catalog::fixed("cyberdesk-system", "cyberdesk-vm-template", Vec::new()),
        caches: Caches::new(desks, vms, vmis).with_pools(pools, lists),
        placement: Placement::default(),
    });
    World {
        shared,
        metrics,
        _vms: vm_writer,
        _vmis: vmi_writer,
        _pool_lists: pool_lists,
        _lanes: lanes,
    }
}
