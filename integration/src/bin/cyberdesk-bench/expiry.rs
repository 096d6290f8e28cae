//! `expiry`: N running desks whose timeouts fall on the same millisecond, with both
//! webhooks registered and called, for `timeoutAction: Stop` and `Delete`. How long after
//! the expiry each VM is halted, and each desk is `TimedOut` (Stop) or gone (Delete), as a
//! client watching them sees it: the time a watch event brings the change, against the
//! expiry both share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use cyberdesk_integration::cluster::{Cluster, namespace};
use cyberdesk_integration::desks::{Apis, epoch_ms, in_phase, now_ms};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::wait::until_every;
use cyberdesk_operator::model::Cyberdesk;

use crate::figures::{ms, pct};
use crate::load::{run_all, watched};
use crate::operators::{delete_webhook_configs, operator_flags, until_webhooks_answer};

/// What the expiry section is asked to do.
pub struct Expiry {
    /// Desks expiring together, one round per size and action.
    pub sizes: Vec<usize>,
    /// `Stop`, `Delete` or both.
    pub actions: Vec<String>,
    pub concurrency: usize,
    /// Extra flags for the operator it starts.
    pub operator_args: Vec<String>,
}

/// When (epoch ms) a watch first showed each change, by object name.
#[derive(Default)]
struct Seen {
    halted: HashMap<String, i64>,
    timed_out: HashMap<String, i64>,
    deleting: HashMap<String, i64>,
    gone: HashMap<String, i64>,
}

type Shared = Arc<Mutex<Seen>>;

fn note(seen: &Shared, pick: impl FnOnce(&mut Seen) -> &mut HashMap<String, i64>, name: String) {
    let now = now_ms();
    if let Ok(mut seen) = seen.lock() {
        pick(&mut seen).entry(name).or_insert(now);
    }
}

/// Watches the round's desks and VMs and notes the first time each change shows, until the
/// returned tasks are aborted.
fn watch(apis: &Apis, seen: &Shared) -> [tokio::task::JoinHandle<()>; 2] {
    let vms = watcher(apis.vms.clone(), watcher::Config::default()).default_backoff();
    let on_vms = seen.clone();
    let vm_task = tokio::spawn(vms.for_each(move |event| {
        if let Ok(watcher::Event::Apply(vm) | watcher::Event::InitApply(vm)) = event
            && vm.run_strategy() == Some("Halted")
        {
            note(&on_vms, |s| &mut s.halted, name_of(&vm));
        }
        std::future::ready(())
    }));
    let desks = watcher(apis.desks.clone(), watcher::Config::default()).default_backoff();
    let on_desks = seen.clone();
    let desk_task = tokio::spawn(desks.for_each(move |event| {
        match event {
            Ok(watcher::Event::Apply(d) | watcher::Event::InitApply(d)) => {
                if in_phase(&d, "TimedOut") {
                    note(&on_desks, |s| &mut s.timed_out, name_of(&d));
                }
                if d.metadata.deletion_timestamp.is_some() {
                    note(&on_desks, |s| &mut s.deleting, name_of(&d));
                }
            }
            Ok(watcher::Event::Delete(d)) => note(&on_desks, |s| &mut s.gone, name_of(&d)),
            _ => {}
        }
        std::future::ready(())
    }));
    [vm_task, desk_task]
}

fn name_of<K: kube::Resource>(o: &K) -> String {
    o.meta().name.clone().unwrap_or_default()
}

fn desk(name: &str, action: &str) -> anyhow::Result<Cyberdesk> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cyberdesk.io/v1alpha1", "kind": "Cyberdesk",
        "metadata": {"name": name},
        "spec": {"timeoutMs": 36_000_000, "timeoutAction": action},
    }))?)
}

/// Each entry's delay after `expiry`, sorted.
fn lags(marks: &HashMap<String, i64>, expiry: i64) -> Vec<Duration> {
    let mut lags: Vec<Duration> = marks
        .values()
        .map(|&at| Duration::from_millis(at.saturating_sub(expiry).max(0) as u64))
        .collect();
    lags.sort();
    lags
}

fn show(what: &str, lags: &[Duration], n: usize) -> String {
    format!(
        "expiry → {what} p50 {} p99 {} max {} ({} of {n})",
        ms(pct(lags, 0.5)),
        ms(pct(lags, 0.99)),
        ms(lags.last().copied().unwrap_or_default()),
        lags.len()
    )
}

pub async fn run(c: &Cluster, args: &Expiry) -> anyhow::Result<()> {
    let mut flags = operator_flags(true);
    flags.extend(args.operator_args.iter().cloned());
    let op = OperatorProcess::start_serving_webhooks(c, "bench-expiry", &flags);
    anyhow::ensure!(
        op.wait_ready(Duration::from_secs(60)).await,
        "not ready: {}",
        op.log()
    );
    let client = c.client().await;
    let probe = namespace(&client, "bench-expiry-probe").await;
    until_webhooks_answer(c, &probe).await?;
    println!(
        "expiry: desks created through the API at concurrency {}, both webhooks registered (failurePolicy Fail) and called, zero simulator delay; operator flags {}",
        args.concurrency,
        flags.join(" ")
    );
    for &n in &args.sizes {
        for action in &args.actions {
            round(c, n, action, args.concurrency).await?;
        }
    }
    drop(op);
    // Later sections create desks with no operator serving these registrations.
    delete_webhook_configs(c);
    Ok(())
}

/// Prints what the round's watches saw.
fn report(seen: &Shared, n: usize, action: &str, set: Duration, expiry: i64) -> anyhow::Result<()> {
    let seen = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("a watch task panicked"))?;
    println!("  {n} desks, timeoutAction {action}, timeouts set in {set:.1?}:");
    println!("    {}", show("VM halted", &lags(&seen.halted, expiry), n));
    if action == "Delete" {
        println!(
            "    {}",
            show("desk deleting", &lags(&seen.deleting, expiry), n)
        );
        println!("    {}", show("desk gone", &lags(&seen.gone, expiry), n));
    } else {
        println!(
            "    {}",
            show("desk TimedOut", &lags(&seen.timed_out, expiry), n)
        );
    }
    Ok(())
}

/// One round: `n` desks with `timeoutAction: action` in a namespace of their own, run, then
/// given timeouts that end at the same instant.
async fn round(c: &Cluster, n: usize, action: &str, concurrency: usize) -> anyhow::Result<()> {
    let client = c.client().await;
    let ns = namespace(&client, &format!("bench-expiry-{}", action.to_lowercase())).await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let apis = Apis::new(&client, &ns);
    let seen = Shared::default();
    let watches = watch(&apis, &seen);
    let store = watched(apis.desks.clone());
    let running = || {
        store
            .state()
            .iter()
            .filter(|d| in_phase(d, "Running"))
            .count()
    };

    let desks = apis.desks.clone();
    run_all(n, concurrency, |i| {
        let desks = desks.clone();
        async move {
            let d = desk(&format!("e{i:05}"), action)?;
            desks.create(&PostParams::default(), &d).await?;
            Ok(())
        }
    })
    .await?;
    let all_running = until_every(
        Duration::from_secs(3600),
        Duration::from_millis(500),
        || std::future::ready((running() == n).then_some(())),
    );
    anyhow::ensure!(
        all_running.await.is_some(),
        "only {}/{n} Running after an hour",
        running()
    );
    // Let the last status writes settle before the timeouts are set.
    tokio::time::sleep(Duration::from_secs(5)).await;

    // One expiry for all: each desk's timeout runs from its own start to the same instant.
    // Setting a timeout is a patch through the validating webhook, about 16 ms per desk
    // under this load.
    let margin = Duration::from_secs(10) + Duration::from_millis(25 * n as u64);
    let expiry = now_ms() + margin.as_millis() as i64;
    let starts: Arc<Vec<(String, i64)>> = Arc::new(
        store
            .state()
            .iter()
            .map(|d| {
                let start = d
                    .status
                    .as_ref()
                    .and_then(|s| s.start_time.as_deref())
                    .map(epoch_ms);
                (name_of(d.as_ref()), start)
            })
            .map(|(name, start)| {
                start
                    .map(|s| (name.clone(), s))
                    .ok_or_else(|| anyhow::anyhow!("{name} has no startTime"))
            })
            .collect::<anyhow::Result<_>>()?,
    );
    let set = run_all(starts.len(), concurrency, |i| {
        let (desks, starts) = (desks.clone(), starts.clone());
        async move {
            let (name, start) = &starts[i];
            let patch = json!({"spec": {"timeoutMs": expiry - start}});
            desks
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
    })
    .await?;
    anyhow::ensure!(
        set < margin,
        "setting the timeouts took {set:?}, past the shared expiry"
    );

    let delete = action == "Delete";
    let done = || {
        seen.lock().is_ok_and(|s| {
            s.halted.len() >= n
                && if delete {
                    s.gone.len() >= n
                } else {
                    s.timed_out.len() >= n
                }
        })
    };
    until_every(
        margin + Duration::from_secs(600),
        Duration::from_millis(200),
        || std::future::ready(done().then_some(())),
    )
    .await;
    watches.iter().for_each(|w| w.abort());
    report(&seen, n, action, set, expiry)?;
    // Untimed: the next round starts without this one's desks (Stop keeps them).
    desks
        .delete_collection(&Default::default(), &Default::default())
        .await?;
    let gone = until_every(Duration::from_secs(600), Duration::from_millis(500), || {
        std::future::ready(store.state().is_empty().then_some(()))
    });
    anyhow::ensure!(
        gone.await.is_some(),
        "{} desks left 10 minutes after their deletion",
        store.state().len()
    );
    Ok(())
}
