//! How the caches fill: by a streaming watch where the apiserver offers one (far less
//! memory than pages of a LIST), by pages where it refuses `sendInitialEvents` (the WatchList
//! feature off, as Kubernetes 1.33 ships). Either way desks reach `Running`.

use std::time::Duration;

use cyberdesk_integration::cluster::{Cluster, apply, cluster, install_everything, namespace};
use cyberdesk_integration::controlplane::{ControlPlane, Options};
use cyberdesk_integration::desks::{Apis, desk_yaml};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::{OperatorProcess, reconciler_only_flags};

/// Starts the operator (`--initial-list=auto`, the default), has one desk reach `Running`
/// and returns the operator's log.
async fn a_desk_runs(c: &Cluster, identity: &str) -> String {
    install_everything(c).await;
    let client = c.client().await;
    let ns = namespace(&client, identity).await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let op = OperatorProcess::start(c, identity, &reconciler_only_flags(false));
    assert!(op.wait_ready(Duration::from_secs(60)).await, "{}", op.log());
    apply(c, &desk_yaml(&ns, "one", "{timeoutMs: 600000}"));
    Apis::new(&client, &ns)
        .wait_phase("one", "Running", Duration::from_secs(60))
        .await;
    op.log()
}

fn strategy_logged(log: &str, strategy: &str) -> bool {
    log.lines().any(|l| {
        l.contains("the caches fill by this initial list")
            && l.contains(&format!("initial_list={strategy}"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_the_apiserver_streams_the_caches_fill_by_a_stream() {
    let log = a_desk_runs(&cluster(), "stream-list").await;
    assert!(strategy_logged(&log, "stream"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_watchlist_on_the_apiserver_the_caches_fill_by_pages() {
    // Our own control plane: the shared one streams.
    let cp = ControlPlane::start(&Options {
        feature_gates: vec!["WatchList=false".into()],
        ..Options::default()
    })
    .expect("control plane");
    let log = a_desk_runs(&Cluster::of(&cp), "paged-list").await;
    assert!(strategy_logged(&log, "list"), "{log}");
}
