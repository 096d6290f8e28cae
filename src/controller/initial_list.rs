//! How the caches fill when a watch starts: a streaming list (the apiserver sends the
//! current objects as watch events, one at a time: Kubernetes' WatchList) or pages of a
//! LIST. Pages of up to 500 whole objects (VMs carry their template) are decoded at once;
//! with 3,000 desks a restarted operator settled at 64 MiB after paged lists and at 31 MiB
//! after streaming ones (docs/benchmarks.md). Apiservers with the WatchList feature off
//! (it is off by default in Kubernetes 1.33) refuse `sendInitialEvents`, so `auto` asks
//! once at start and falls back to pages.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use kube::runtime::watcher;

use crate::model::Cyberdesk;

/// How long the start-up probe may take before the caches fill by pages instead.
const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A label no object carries: the probe's stream starts with its end-of-list bookmark.
const MATCHES_NOTHING: &str = "cyberdesk.io/initial-list-probe=none";

/// How the controller's caches fill when their watches start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InitialList {
    /// Stream when the apiserver accepts a streaming watch at start, else pages.
    Auto,
    /// A streaming watch (`sendInitialEvents`; Kubernetes' WatchList feature).
    Stream,
    /// Pages of a LIST, then a watch.
    List,
}

/// Whether the watches stream their initial lists, from the flag and (for `auto` only)
/// whether the apiserver accepted a streaming watch.
pub async fn streams<F>(flag: InitialList, apiserver_streams: impl FnOnce() -> F) -> bool
where
    F: std::future::Future<Output = bool>,
{
    match flag {
        InitialList::Stream => true,
        InitialList::List => false,
        InitialList::Auto => apiserver_streams().await,
    }
}

/// `base` set to fill by a streaming watch, or by pages from the apiserver's watch cache
/// (`any_semantic`: a store only needs to agree with the watch that follows it).
pub fn configure(base: watcher::Config, streaming: bool) -> watcher::Config {
    if streaming {
        base.streaming_lists()
    } else {
        base.any_semantic()
    }
}

/// Asks the apiserver for a streaming watch of desks that match nothing. True only when the
/// stream opens and its first event is not an error; anything else (refused, down, slow)
/// means pages, which work everywhere.
pub async fn apiserver_streams(desks: &Api<Cyberdesk>) -> bool {
    let params = WatchParams::streaming_lists()
        .labels(MATCHES_NOTHING)
        .timeout(5);
    let probe = async {
        let stream = desks.watch(&params, "0").await.ok()?;
        let first = stream.boxed().try_next().await.ok()??;
        Some(!matches!(first, WatchEvent::Error(_)))
    };
    match tokio::time::timeout(PROBE_LIMIT, probe).await {
        Ok(Some(accepted)) => accepted,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
