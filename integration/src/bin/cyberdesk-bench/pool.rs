//! `make bench BENCH_ARGS=pool`: how long a desk waits for a Running VM when it claims one
//! from a warm pool, against one booted for it, with the simulator taking BOOT per VMI.
//! Each desk's wait runs from its create call to the moment one watch of the namespace
//! sees it `Running`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use cyberdesk_integration::cluster::{Cluster, apply, namespace};
use cyberdesk_integration::desks::in_phase;
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::pools::{pool_yaml, wait_pool_ready};
use cyberdesk_integration::wait::until_every;
use cyberdesk_operator::model::{Cyberdesk, CyberdeskPool, VmSource};

use crate::figures::{ms, pct};
use crate::operators::operator_flags;

/// The simulated boot: three phase steps of a third each.
const BOOT: Duration = Duration::from_secs(5);
const DESKS: usize = 100;
const POOL_SIZE: usize = 20;
/// Cold desks are created this many at a time (a boot each, so in batches).
const COLD_BATCH: usize = 20;

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// When each desk of `desks` was first seen Running, by name.
fn watch_running(desks: Api<Cyberdesk>) -> Seen {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let stream = watcher(desks, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    tokio::spawn(stream.for_each(move |desk| {
        if let Ok(desk) = desk
            && in_phase(&desk, "Running")
            && let Some(name) = desk.metadata.name
            && let Ok(mut seen) = record.lock()
        {
            seen.entry(name).or_insert_with(Instant::now);
        }
        async {}
    }));
    seen
}

async fn wait_seen(seen: &Seen, name: &str, within: Duration) -> anyhow::Result<Instant> {
    let at = until_every(within, Duration::from_millis(1), || async {
        seen.lock().ok()?.get(name).copied()
    })
    .await;
    at.ok_or_else(|| anyhow::anyhow!("{name} never ran"))
}

fn desk(name: &str, pool: &str) -> anyhow::Result<Cyberdesk> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": name}, "spec": {"timeoutMs": 3_600_000, "pool": pool},
    }))?)
}

fn report(what: &str, mut waits: Vec<Duration>) {
    waits.sort();
    println!(
        "pool: create → Running, {what} ({} desks): p50 {} p99 {} max {}",
        waits.len(),
        ms(pct(&waits, 0.5)),
        ms(pct(&waits, 0.99)),
        ms(waits.last().copied().unwrap_or_default())
    );
}

pub async fn run(c: &Cluster) -> anyhow::Result<()> {
    let client = c.client().await;
    let ns = namespace(&client, "bench-pool").await;
    let _sim = Simulator::start(
        client.clone(),
        SimulatorOptions::in_namespace(&ns).with_phase_delay(BOOT / 3),
    );
    let op = OperatorProcess::start(c, "bench-pool", &operator_flags(false));
    anyhow::ensure!(op.wait_ready(Duration::from_secs(60)).await, "not ready");
    let desks: Api<Cyberdesk> = Api::namespaced(client.clone(), &ns);
    let pools: Api<CyberdeskPool> = Api::namespaced(client.clone(), &ns);
    let seen = watch_running(desks.clone());
    println!("pool: simulated boot {} per VMI", ms(BOOT));

    apply(
        c,
        &pool_yaml(
            &ns,
            "warm",
            &format!("{{size: {POOL_SIZE}, maxBooting: {POOL_SIZE}}}"),
        ),
    );
    apply(c, &pool_yaml(&ns, "empty", "{size: 0}"));
    let t = Instant::now();
    wait_pool_ready(&pools, "warm", POOL_SIZE as i32, Duration::from_secs(120)).await;
    println!("pool: {POOL_SIZE} VMs ready after {}", ms(t.elapsed()));

    // Hits, one desk at a time; before each, a ready VM (the refill is not timed), as the
    // pool's status shows once it counts every earlier claim.
    let mut hits = Vec::new();
    for i in 0..DESKS {
        let name = format!("hit{i:03}");
        let ready = until_every(
            Duration::from_secs(60),
            Duration::from_millis(20),
            || async {
                let status = pools.get("warm").await.ok()?.status?;
                (status.claimed >= i as i32 && status.ready > 0).then_some(())
            },
        );
        anyhow::ensure!(ready.await.is_some(), "the pool did not refill");
        let t = Instant::now();
        desks
            .create(&PostParams::default(), &desk(&name, "warm")?)
            .await?;
        hits.push(wait_seen(&seen, &name, Duration::from_secs(60)).await? - t);
    }
    let from_pool = desks
        .list(&Default::default())
        .await?
        .items
        .iter()
        .filter(|d| d.status.as_ref().and_then(|s| s.source) == Some(VmSource::Pool))
        .count();
    report(
        &format!("claimed from the pool ({from_pool} of {DESKS} from it)"),
        hits,
    );

    // Cold: booted for the desk, COLD_BATCH at a time.
    let mut cold = Vec::new();
    for batch in 0..DESKS / COLD_BATCH {
        let names: Vec<String> = (0..COLD_BATCH)
            .map(|i| format!("cold{:03}", batch * COLD_BATCH + i))
            .collect();
        let mut started = Vec::new();
        for name in &names {
            started.push(Instant::now());
            desks
                .create(&PostParams::default(), &desk(name, "empty")?)
                .await?;
        }
        for (name, t) in names.iter().zip(started) {
            cold.push(wait_seen(&seen, name, Duration::from_secs(120)).await? - t);
        }
    }
    report("booted for the desk (empty pool)", cold);
    Ok(())
}
