//! Restart safety: the operator is SIGKILLed while 50 desks are created, at least once
//! while it is creating VMs; after a clean restart there is exactly one VM per desk, no VM
//! was ever replaced (one uid per name over the whole run) and no desk's startTime moved;
//! once every desk is deleted no VM is left.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};

use cyberdesk_integration::cluster::{Cluster, cluster, install_everything, namespace};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, Scrape, reconciler_only_flags};
use cyberdesk_integration::wait::{eventually, until_every};
use kube::api::{Api, DeleteParams, ListParams};
use kube::{Resource, ResourceExt};

const DESKS: usize = 50;

fn start(c: &Cluster, n: usize) -> OperatorProcess {
    let args = reconciler_only_flags(false);
    OperatorProcess::start(c, &format!("restart-{n}"), &args)
}

/// A small deterministic generator, so a failure can be replayed (seed in the output).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Object name → every value seen.
type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// Every value `of` each object of `api` ever had, by object name, seen through a watch
/// for as long as the returned task runs.
fn record<K, F>(api: Api<K>, of: F) -> (Seen, tokio::task::JoinHandle<()>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    F: Fn(&K) -> Option<String> + Send + 'static,
{
    let seen = Arc::new(Mutex::new(BTreeMap::<String, BTreeSet<String>>::new()));
    let into = seen.clone();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = stream.next().await {
            if let Ok(obj) = event
                && let Some(value) = of(&obj)
            {
                let mut seen = into.lock().unwrap_or_else(|e| e.into_inner());
                seen.entry(obj.name_any()).or_default().insert(value);
            }
        }
    });
    (seen, task)
}

/// How many of `names`' VMs exist now (a failed list panics, never reads as none).
async fn vms_of(apis: &Apis, names: &[String]) -> usize {
    let list = apis
        .vms
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing VMs: {e}"));
    list.items
        .iter()
        .filter(|vm| {
            names
                .iter()
                .any(|n| vm.name_any() == format!("cyberdesk-{n}"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_creation_leaves_exactly_one_vm_per_desk() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "restart").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");

    let (vm_uids, vm_watch) = record(apis.vms.clone(), |vm| vm.meta().uid.clone());
    let (start_times, desk_watch) = record(apis.desks.clone(), |d| {
        d.status
            .as_ref()
            .and_then(|s| s.start_time.as_deref().map(String::from))
    });

    let mut generation = 0;
    let mut op = start(&c, generation);
    let names: Vec<String> = (0..DESKS).map(|i| format!("d{i:02}")).collect();
    // Five batches of ten. Even batches: kill as soon as the first of the batch's VMs
    // exists, so the operator dies in the middle of creating the others. Odd batches: kill
    // at a random moment.
    let mut mid_creation_kills = 0;
    for (b, batch) in names.chunks(10).enumerate() {
        let yaml: Vec<String> = batch
            .iter()
            .map(|n| desk_yaml(&ns, n, "{timeoutMs: 600000}"))
            .collect();
        let out = c
            .kubectl()
            .apply(&yaml.join("---\n"), &[])
            .expect("kubectl");
        assert!(out.success, "{}", out.stderr);
        if b % 2 == 0 {
            // The watch hears of a new VM within milliseconds; a list per poll would be
            // too slow to land inside the burst of creations.
            let first_seen = until_every(Duration::from_secs(60), Duration::from_millis(1), || {
                let seen = vm_uids.lock().unwrap_or_else(|e| e.into_inner());
                let any = batch
                    .iter()
                    .any(|n| seen.contains_key(&format!("cyberdesk-{n}")));
                std::future::ready(any.then_some(()))
            });
            first_seen
                .await
                .expect("the batch's first VM never appeared");
        } else {
            tokio::time::sleep(Duration::from_millis(next(&mut seed) % 1500)).await;
        }
        op.signal(libc::SIGKILL);
        assert!(op.wait_exit(Duration::from_secs(5)).await.is_some());
        let made = vms_of(&apis, batch).await;
        eprintln!("batch {b}: killed with {made} of its 10 VMs made");
        if made > 0 && made < batch.len() {
            mid_creation_kills += 1;
        }
        generation += 1;
        op = start(&c, generation);
    }
    assert!(
        mid_creation_kills > 0,
        "no kill landed while the operator was creating VMs"
    );
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());

    eventually(Duration::from_secs(120), "every desk Running", || async {
        (apis.count_in_phase("Running").await == DESKS).then_some(())
    })
    .await;
    let vms = apis
        .vms
        .list(&ListParams::default())
        .await
        .expect("list vms");
    let vm_names: Vec<String> = vms
        .items
        .iter()
        .filter_map(|v| v.metadata.name.clone())
        .collect();
    assert_eq!(vm_names.len(), DESKS, "VMs: {vm_names:?}");
    let expected: BTreeSet<String> = names.iter().map(|n| format!("cyberdesk-{n}")).collect();
    assert_eq!(vm_names.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let created = op.metric("cyberdesk_vm_created_total").unwrap_or(0.0);
    eprintln!("VMs created by the last operator generation: {created}");
    // Never replaced: one uid per VM name, one startTime per desk, over the whole run.
    tokio::time::sleep(Duration::from_secs(1)).await;
    vm_watch.abort();
    desk_watch.abort();
    let vm_uids = vm_uids.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(vm_uids.len(), DESKS, "{vm_uids:?}");
    for (name, uids) in &vm_uids {
        assert_eq!(uids.len(), 1, "VM {name} was replaced: {uids:?}");
    }
    let start_times = start_times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(start_times.len(), DESKS, "{start_times:?}");
    for (name, times) in &start_times {
        assert_eq!(times.len(), 1, "the startTime of {name} moved: {times:?}");
    }

    apis.desks
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete all");
    eventually(
        Duration::from_secs(120),
        "every desk and VM gone",
        || async {
            let desks = apis
                .desks
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let vms = apis
                .vms
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            let vmis = apis
                .vmis
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .len();
            (desks == 0 && vms == 0 && vmis == 0).then_some(())
        },
    )
    .await;
}
