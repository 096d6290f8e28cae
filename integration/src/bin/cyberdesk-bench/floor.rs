//! The KubeVirt floor of the scale bench: the VMs an operator would create, created
//! directly through the API with no operator and no desks, and run by the simulator. No
//! operator can bring N desks to `Running` sooner than this takes on the same apiserver,
//! because every desk needs its VM created and run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use kube::runtime::reflector::Store;

use cyberdesk_integration::audit::{AuditLog, Request};
use cyberdesk_integration::cluster::{Cluster, namespace};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::wait::until_every;
use cyberdesk_operator::model::{VirtualMachine, VirtualMachineInstance};

use crate::load::{run_all, watched};

/// What the floor run saw.
pub struct Floor {
    pub to_running: Duration,
    /// Every client's requests from the first create to all `Running`.
    pub requests: BTreeMap<Request, u64>,
}

/// `like`'s spec and labels on a fresh VM named `name`: what the operator created for a
/// desk, without the owner (no desk exists) and started as the operator starts it.
fn copy_of(like: &VirtualMachine, name: &str) -> VirtualMachine {
    let mut spec = like.spec.clone();
    spec.run_strategy = Some("Always".into());
    spec.running = None;
    let mut vm = VirtualMachine::new(name, spec);
    vm.metadata.labels = Some([("app".to_string(), "bench-floor".to_string())].into());
    vm
}

fn running(store: &Store<VirtualMachineInstance>) -> usize {
    store
        .state()
        .iter()
        .filter(|vmi| vmi.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

/// Creates `n` copies of `like` at `concurrency` in a namespace of their own, with a
/// simulator of their own, and waits for all their VMIs to run.
pub async fn run(
    c: &Cluster,
    like: &VirtualMachine,
    n: usize,
    concurrency: usize,
    log: &mut AuditLog,
) -> anyhow::Result<Floor> {
    let client = c.client().await;
    let ns = namespace(&client, "bench-floor").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), &ns);
    let store = watched(vmis);
    log.mark();
    let t = Instant::now();
    run_all(n, concurrency, |i| {
        let (vms, vm) = (vms.clone(), copy_of(like, &format!("floor-{i:05}")));
        async move {
            vms.create(&PostParams::default(), &vm).await?;
            Ok(())
        }
    })
    .await?;
    let done = until_every(
        Duration::from_secs(3600),
        Duration::from_millis(200),
        || std::future::ready((running(&store) == n).then_some(())),
    );
    anyhow::ensure!(
        done.await.is_some(),
        "only {}/{n} VMIs Running after an hour",
        running(&store)
    );
    let to_running = t.elapsed();
    Ok(Floor {
        to_running,
        requests: log.since_mark()?.all(),
    })
}
