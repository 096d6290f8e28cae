//! Load the sections put on the apiserver, and how they watch the result: many requests at a
//! fixed concurrency, as a platform's API would send them, and many objects read from one
//! watch instead of repeated LISTs.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// The objects of `api` as one watch sees them. Counting phases in it costs the apiserver
/// one more watcher; a LIST of every desk every look took a tenth of its CPU at 1,000 desks.
pub fn watched<K>(api: Api<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    store
}

/// Runs `make(0..n)` with `concurrency` in flight; how long it took.
pub async fn run_all<F, Fut>(n: usize, concurrency: usize, make: F) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let t = Instant::now();
    futures::stream::iter((0..n).map(make))
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(t.elapsed())
}
