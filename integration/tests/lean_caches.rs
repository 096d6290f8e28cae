//! The controller's caches hold trimmed desks and compact VM records: a tenant's 200 KB
//! annotation, its labels, every object's managedFields and a VM's template never enter them, while
//! what a reconcile reads stays. Exercised with the controller's own watch builder against the real
//! apiserver.

use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;

use cyberdesk_integration::cluster::{cluster, install_everything, namespace};
use cyberdesk_integration::desks::desk_yaml;
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::wait::eventually;
use cyberdesk_operator::controller::cache::{recorded_watch, trim_desk, trim_vm, trimmed_watch};
use cyberdesk_operator::controller::records::VmRecord;
use cyberdesk_operator::model::{Cyberdesk, VirtualMachine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_annotation_and_a_vm_template_stay_out_of_the_caches() {
    let c = cluster();
    install_everything(&c).await;
    let client = c.client().await;
    let ns = namespace(&client, "lean").await;
    let _sim = Simulator::start(client.clone(), SimulatorOptions::in_namespace(&ns));

    // A desk with a 200 KB annotation (server-side: a client-side apply would copy it into
    // last-applied-configuration and pass the apiserver's 256 KiB limit).
    // And 500 labels of a tenant's: Kubernetes limits neither their number nor their size.
    let big = "x".repeat(200_000);
    let labels: String = (0..500)
        .map(|i| format!("    tenant/l{i:03}: {}\n", "v".repeat(60)))
        .collect();
    let yaml = desk_yaml(&ns, "fat", "{timeoutMs: 600000}").replace(
        "  namespace:",
        &format!("  annotations:\n    tenant/notes: {big}\n  labels:\n{labels}  namespace:"),
    );
    let out = c
        .kubectl()
        .apply(&yaml, &["--server-side"])
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let stored = Api::<Cyberdesk>::namespaced(client.clone(), &ns)
        .get("fat")
        .await
        .expect("desk");
    assert!(
        stored
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a["tenant/notes"].len() == 200_000),
        "the apiserver stores the annotation; only the cache drops it"
    );

    let (desks, events, _) = trimmed_watch(
        Api::<Cyberdesk>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
        trim_desk,
    );
    tokio::spawn(events.for_each(|_| async {}));
    let cached = eventually(Duration::from_secs(20), "the desk in the cache", || {
        let found = desks
            .state()
            .into_iter()
            .find(|d| d.metadata.name.as_deref() == Some("fat"));
        std::future::ready(found)
    })
    .await;
    assert!(
        cached.metadata.annotations.is_none(),
        "{:?}",
        cached
            .metadata
            .annotations
            .as_ref()
            .map(|a| a.keys().collect::<Vec<_>>())
    );
    assert!(
        stored
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.len() == 500),
        "the apiserver stores the labels; only the cache drops them"
    );
    assert!(
        cached.metadata.labels.is_none(),
        "{} labels cached",
        cached.metadata.labels.as_ref().map_or(0, |l| l.len())
    );
    assert!(cached.metadata.managed_fields.is_none());
    assert_eq!(cached.spec, stored.spec);
    assert_eq!(cached.metadata.uid, stored.metadata.uid);
    assert!(serde_json::to_vec(&*cached).expect("json").len() < 2_000);

    // A VM made from a template: the cache keeps owners, run strategy and status.
    let vm_yaml = format!(
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm-fat\n  namespace: {ns}\n  labels: {{app.kubernetes.io/managed-by: cyberdesk-operator, cyberdesk-instance: fat}}\n  annotations: {{tenant/notes: {big}}}\nspec:\n  runStrategy: Always\n  template:\n    spec:\n      domain: {{devices: {{}}, resources: {{requests: {{memory: 1Gi}}}}}}\n"
    );
    let out = c
        .kubectl()
        .apply(&vm_yaml, &["--server-side"])
        .expect("kubectl");
    assert!(out.success, "{}", out.stderr);
    let (vms, events, _) = recorded_watch::<VmRecord>(
        Api::<VirtualMachine>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
        trim_vm,
    );
    // The trigger carries the desk label (it maps the VM to its desk); the cache does not.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(events.for_each(move |e| {
        if let Ok(vm) = e {
            let _ = seen_tx.send(vm);
        }
        async {}
    }));
    let cached = eventually(
        Duration::from_secs(20),
        "the VM running in the cache",
        || {
            let found = vms
                .get(&ns, "vm-fat")
                .filter(|v| v.printable_status() == Some("Running"));
            std::future::ready(found)
        },
    )
    .await;
    assert_eq!(cached.run_strategy(), Some("Always"));
    assert!(
        cached.metadata.labels.is_none(),
        "{:?}",
        cached.metadata.labels
    );
    assert!(cached.spec.template.is_none());
    assert!(cached.metadata.annotations.is_none() && cached.metadata.managed_fields.is_none());
    let triggered = seen.recv().await.expect("a trigger");
    assert_eq!(
        triggered
            .metadata
            .labels
            .as_ref()
            .map(|l| l.keys().cloned().collect::<Vec<_>>()),
        Some(vec!["cyberdesk-instance".to_string()])
    );
    assert!(triggered.spec.template.is_none());
}
