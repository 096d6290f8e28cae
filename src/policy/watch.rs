//! Keeps the policy set current on every replica: files from `--policy-dir` plus the `*.json`
//! keys of the policies ConfigMap, reloaded whenever the ConfigMap changes. A set that does
//! not load is reported (log, metric, Warning event on the ConfigMap) and the last good set
//! stays in force.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::policy::{self, PolicySet, PolicyStore};

pub const GATE_POLICIES: &str = "policies";

#[derive(Clone)]
pub struct PolicySources {
    pub dir: PathBuf,
    pub namespace: String,
    pub configmap: String,
}

/// (origin, bytes) of every policy source: directory files first, then ConfigMap keys.
fn sources(
    dir: &std::path::Path,
    cm: Option<&ConfigMap>,
) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut all =
        policy::files::load_dir(dir).map_err(|e| format!("cannot read policy folder: {e}"))?;
    if let Some(cm) = cm {
        let data: BTreeMap<&String, &String> = cm
            .data
            .iter()
            .flatten()
            .filter(|(k, _)| k.ends_with(".json"))
            .collect();
        for (key, value) in data {
            all.push((
                format!("configmap/{}/{key}", cm.name_any()),
                value.clone().into_bytes(),
            ));
        }
    }
    Ok(all)
}

/// Loads and swaps in the set; returns the error report when it does not load.
pub fn reload(
    store: &PolicyStore,
    metrics: &Metrics,
    dir: &std::path::Path,
    cm: Option<&ConfigMap>,
) -> Result<usize, String> {
    let result = sources(dir, cm).and_then(|src| {
        PolicySet::load(&src).map_err(|errors| {
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
    });
    match result {
        Ok(set) => {
            let n = set.len();
            store.replace(set);
            metrics.policy_reload.with_label_values(&["success"]).inc();
            tracing::info!(policies = n, "policy set loaded");
            Ok(n)
        }
        Err(report) => {
            metrics.policy_reload.with_label_values(&["error"]).inc();
            tracing::error!(error = %report, "policy set refused; the previous set stays in force");
            Err(report)
        }
    }
}

/// Loads once, calls `loaded` (the wiring opens the policies readiness gate), then follows
/// the ConfigMap until `stop`. `loaded` is called after every good load.
pub async fn run(
    client: kube::Client,
    sources_cfg: PolicySources,
    store: PolicyStore,
    metrics: Metrics,
    loaded: impl Fn() + Send,
    recorder: Recorder,
    stop: CancellationToken,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &sources_cfg.namespace);
    let cfg =
        watcher::Config::default().fields(&format!("metadata.name={}", sources_cfg.configmap));
    let mut events = watcher(api, cfg)
        .backoff(crate::backoff::watch_backoff())
        .boxed();
    let mut current: Option<ConfigMap> = None;
    let mut initial = true;
    // Before the first list arrives, serve with the file policies alone.
    let _ = reload(&store, &metrics, &sources_cfg.dir, None);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            next = events.next() => match next {
                Some(event) => event,
                None => return,
            },
        };
        let changed = match event {
            Ok(watcher::Event::Apply(cm)) | Ok(watcher::Event::InitApply(cm)) => {
                current = Some(cm);
                !initial
            }
            Ok(watcher::Event::Delete(_)) => {
                current = None;
                true
            }
            Ok(watcher::Event::Init) => {
                current = None;
                false
            }
            Ok(watcher::Event::InitDone) => {
                initial = false;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy ConfigMap watch failed; retrying");
                false
            }
        };
        if !changed {
            continue;
        }
        let result = reload(&store, &metrics, &sources_cfg.dir, current.as_ref());
        if result.is_ok() {
            // Ready only with a set that loaded: a new pod facing a broken ConfigMap stays
            // unready (old pods keep serving the last good set) instead of admitting
            // without the cluster's policies.
            loaded();
        }
        if let Err(report) = result
            && let Some(cm) = &current
        {
            let event = Event {
                type_: EventType::Warning,
                reason: "PolicyRejected".into(),
                note: Some(crate::text::truncate(&report, 1000)),
                action: "Reload".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &cm.object_ref(&())).await {
                tracing::warn!(error = %e, "could not publish the policy event");
            }
        }
    }
}

#[cfg(test)]
mod tests;
