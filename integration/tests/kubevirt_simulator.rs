//! The KubeVirt simulator against a real kube-apiserver: the CRDs as KubeVirt ships them,
//! and VMs driven through their run strategies by `kubectl`, as a user would.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use cyberdesk_integration::cluster::{cluster, namespace};
use cyberdesk_integration::kubevirt::{
    NODE_NAME_LABEL, Simulator, SimulatorHandle, SimulatorOptions, VM_CONTROLLER_FINALIZER,
    Virtctl, install_kubevirt_crds, vm_resource, vmi_resource,
};
use cyberdesk_integration::wait;

const WAIT: Duration = Duration::from_secs(30);

/// [`wait::eventually`] with this file's deadline.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait::eventually(WAIT, what, check).await
}

/// A cluster with the CRDs, a fresh namespace and a simulator scoped to it.
struct Env {
    ns: String,
    vms: Api<DynamicObject>,
    vmis: Api<DynamicObject>,
    sim: SimulatorHandle,
}

async fn env(prefix: &str, opts: SimulatorOptions) -> Env {
    let client = cluster().client().await;
    install_kubevirt_crds(&client)
        .await
        .expect("install KubeVirt CRDs");
    let ns = namespace(&client, prefix).await;
    let sim = Simulator::start(client.clone(), opts.within(&ns));
    Env {
        vms: Api::namespaced_with(client.clone(), &ns, &vm_resource()),
        vmis: Api::namespaced_with(client, &ns, &vmi_resource()),
        ns,
        sim,
    }
}

impl Env {
    fn apply_vm(&self, name: &str, strategy_line: &str, finalizers: &[&str]) {
        let finalizers = if finalizers.is_empty() {
            String::new()
        } else {
            format!("  finalizers: [{}]\n", finalizers.join(", "))
        };
        let yaml = format!(
            "apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: {name}
  namespace: {ns}
{finalizers}spec:
  {strategy_line}
  template:
    metadata:
      labels:
        app: desktop
        kubevirt.io/domain: {name}
    spec:
      domain:
        devices: {{}}
        resources:
          requests:
            memory: 64Mi
      networks:
      - name: default
        pod: {{}}
",
            ns = self.ns
        );
        let out = cluster()
            .kubectl()
            .apply(&yaml, &[])
            .expect("run kubectl")
            .ok();
        assert!(out.is_ok(), "{out:?}");
    }

    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["-n", &self.ns]);
        cluster()
            .kubectl()
            .run(&all, None)
            .expect("run kubectl")
            .ok()
            .expect("kubectl succeeds")
    }

    async fn vm(&self, name: &str) -> Option<DynamicObject> {
        self.vms.get_opt(name).await.expect("get VM")
    }

    async fn vmi(&self, name: &str) -> Option<DynamicObject> {
        self.vmis.get_opt(name).await.expect("get VMI")
    }

    /// The VM once its printableStatus is `wanted`.
    async fn vm_status(&self, name: &str, wanted: &str) -> DynamicObject {
        eventually(&format!("VM {name} is {wanted}"), || async {
            self.vm(name)
                .await
                .filter(|vm| vm.data["status"]["printableStatus"] == wanted)
        })
        .await
    }

    /// The VMI once it is in `wanted` phase.
    async fn vmi_phase(&self, name: &str, wanted: &str) -> DynamicObject {
        eventually(&format!("VMI {name} is {wanted}"), || async {
            self.vmi(name)
                .await
                .filter(|vmi| vmi.data["status"]["phase"] == wanted)
        })
        .await
    }

    async fn vmi_gone(&self, name: &str) {
        eventually(&format!("VMI {name} is gone"), || async {
            self.vmi(name).await.is_none().then_some(())
        })
        .await;
    }

    fn set_run_strategy(&self, name: &str, from: &str, to: &str) {
        let patch = json!([
            {"op": "test", "path": "/spec/runStrategy", "value": from},
            {"op": "replace", "path": "/spec/runStrategy", "value": to},
        ])
        .to_string();
        self.kubectl(&["patch", "vm", name, "--type=json", "-p", &patch]);
    }
}

fn condition<'a>(obj: &'a DynamicObject, kind: &str) -> &'a Value {
    obj.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_match_what_kubevirt_ships() {
    let client = cluster().client().await;
    install_kubevirt_crds(&client).await.expect("first install");
    install_kubevirt_crds(&client)
        .await
        .expect("second install is a no-op");
    let crds: Api<CustomResourceDefinition> = Api::all(client);

    for (name, short, has_status, columns) in [
        (
            "virtualmachines.kubevirt.io",
            ["vm", "vms"],
            true,
            vec!["Age", "Status", "Ready"],
        ),
        (
            "virtualmachineinstances.kubevirt.io",
            ["vmi", "vmis"],
            false,
            vec![
                "Age",
                "Phase",
                "IP",
                "NodeName",
                "Ready",
                "Live-Migratable",
                "Paused",
            ],
        ),
    ] {
        let crd = crds.get(name).await.expect("CRD stored");
        let spec = &crd.spec;
        assert_eq!(spec.group, "kubevirt.io");
        assert_eq!(spec.scope, "Namespaced");
        assert_eq!(
            spec.names.short_names.as_deref(),
            Some(&short.map(String::from)[..])
        );
        assert_eq!(
            spec.names.categories.as_deref(),
            Some(&["all".to_owned()][..])
        );
        let versions: Vec<_> = spec
            .versions
            .iter()
            .map(|v| {
                (
                    v.name.as_str(),
                    v.served,
                    v.storage,
                    v.deprecated.unwrap_or(false),
                )
            })
            .collect();
        assert_eq!(
            versions,
            [("v1", true, true, false), ("v1alpha3", true, false, true)],
            "{name}"
        );
        for v in &spec.versions {
            let status = v.subresources.as_ref().and_then(|s| s.status.as_ref());
            assert_eq!(
                status.is_some(),
                has_status,
                "{name} {} status subresource",
                v.name
            );
            let names: Vec<_> = v
                .additional_printer_columns
                .iter()
                .flatten()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(names, columns, "{name} {} columns", v.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_vm_runs_stops_restarts_and_is_deleted() {
    let env = env("kv-life", SimulatorOptions::default()).await;
    env.apply_vm("desk", "runStrategy: Always", &[]);

    let vmi = env.vmi_phase("desk", "Running").await;
    let vm = env.vm_status("desk", "Running").await;
    let node = "sim-node-1";
    let labels = vmi.labels().clone();
    assert_eq!(
        labels,
        [
            ("app", "desktop"),
            ("kubevirt.io/domain", "desk"),
            (NODE_NAME_LABEL, node)
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into()
    );
    let owner = &vmi.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.api_version.as_str()),
        ("VirtualMachine", "kubevirt.io/v1")
    );
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    assert_eq!(Some(&owner.uid), vm.metadata.uid.as_ref());
    assert_eq!(
        vmi.annotations()
            .get("kubevirt.io/vm-generation")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(vmi.data["spec"], vm.data["spec"]["template"]["spec"]);
    assert_eq!(vmi.data["status"]["nodeName"], node);
    let iface = &vmi.data["status"]["interfaces"][0];
    let ip = iface["ipAddress"].as_str().expect("VMI has an IP");
    assert_eq!(iface["ipAddresses"], json!([ip]));
    assert_eq!(iface["name"], "default");
    let phases: Vec<_> = vmi.data["status"]["phaseTransitionTimestamps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t["phase"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(phases, ["Pending", "Scheduling", "Scheduled", "Running"]);
    let ready = condition(&vmi, "Ready");
    assert_eq!(
        (&ready["status"], &ready["lastProbeTime"]),
        (&json!("True"), &Value::Null)
    );
    assert!(ready["lastTransitionTime"].is_string() && ready.get("reason").is_none());
    // Real KubeVirt writes some conditions with explicit null times; they must survive.
    let migratable = condition(&vmi, "LiveMigratable");
    assert_eq!(
        migratable.get("lastTransitionTime"),
        Some(&Value::Null),
        "{migratable}"
    );
    assert_eq!(ready.get("lastProbeTime"), Some(&Value::Null), "{ready}");

    assert!(vm.finalizers().iter().any(|f| f == VM_CONTROLLER_FINALIZER));
    let status = &vm.data["status"];
    assert_eq!(
        (&status["ready"], &status["created"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(status["runStrategy"], "Always");
    assert_eq!(condition(&vm, "Ready")["status"], "True");
    let copied = condition(&vm, "LiveMigratable");
    assert_eq!(
        copied.get("lastTransitionTime"),
        Some(&Value::Null),
        "{copied}"
    );
    let listed = env.kubectl(&["get", "vm", "desk"]);
    assert!(
        listed.contains("Running") && listed.contains("True"),
        "{listed}"
    );
    let listed = env.kubectl(&["get", "vmi", "desk"]);
    assert!(
        listed.contains("Running") && listed.contains(ip) && listed.contains(node),
        "{listed}"
    );
    assert_eq!(env.sim.vmis_created(), 1);

    // Steady state: further passes write nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (vm_after, vmi_after) = (
        env.vm("desk").await.expect("VM"),
        env.vmi("desk").await.expect("VMI"),
    );
    assert_eq!(
        vm_after.resource_version(),
        vm.resource_version(),
        "VM rewritten in steady state"
    );
    assert_eq!(
        vmi_after.resource_version(),
        vmi.resource_version(),
        "VMI rewritten in steady state"
    );

    env.set_run_strategy("desk", "Always", "Halted");
    env.vmi_gone("desk").await;
    // Stopped already shows while the final VMI is still there; `created` goes with it.
    let vm = eventually("VM desk is Stopped with no VMI", || async {
        env.vm("desk").await.filter(|vm| {
            vm.data["status"]["printableStatus"] == "Stopped"
                && vm.data["status"].get("created").is_none()
        })
    })
    .await;
    assert!(vm.data["status"].get("ready").is_none());
    assert_eq!(condition(&vm, "Ready")["reason"], "VMINotExists");
    assert_eq!(vm.data["status"]["runStrategy"], "Halted");
    assert_eq!(env.sim.vmis_deleted(), 1);

    env.set_run_strategy("desk", "Halted", "Always");
    let second = env.vmi_phase("desk", "Running").await;
    assert_ne!(second.uid(), vmi.uid());
    env.vm_status("desk", "Running").await;
    assert_eq!(env.sim.vmis_created(), 2);

    env.kubectl(&["delete", "vm", "desk", "--wait=false"]);
    env.vmi_gone("desk").await;
    eventually("VM desk is gone", || async {
        env.vm("desk").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_deletion_keeps_foreign_finalizers() {
    let env = env("kv-fin", SimulatorOptions::default()).await;
    env.apply_vm("kept", "runStrategy: Always", &["example.com/keep"]);
    env.vm_status("kept", "Running").await;

    env.vms
        .delete("kept", &DeleteParams::default())
        .await
        .expect("delete VM");
    env.vmi_gone("kept").await;
    let vm = eventually("the VM finalizer is released", || async {
        env.vm("kept")
            .await
            .filter(|vm| vm.finalizers() == ["example.com/keep"])
    })
    .await;
    assert_eq!(vm.data["status"]["printableStatus"], "Terminating");

    let release = json!({"metadata": {"finalizers": null}});
    env.vms
        .patch("kept", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("drop finalizer");
    eventually("VM kept is gone", || async {
        env.vm("kept").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_take_their_time_and_shutdown_shows_stopping() {
    let delay = Duration::from_millis(300);
    let opts = SimulatorOptions {
        shutdown: Duration::from_millis(600),
        ..SimulatorOptions::default()
    }
    .with_phase_delay(delay);
    let env = env("kv-slow", opts).await;
    let started = Instant::now();
    env.apply_vm("slow", "runStrategy: Always", &[]);

    let (mut phases, mut statuses) = (Vec::<String>::new(), Vec::<String>::new());
    let note = |seen: &mut Vec<String>, v: &Value| {
        if let Some(s) = v
            .as_str()
            .filter(|s| seen.last().map(String::as_str) != Some(*s))
        {
            seen.push(s.to_owned());
        }
    };
    while phases.last().map(String::as_str) != Some("Running") {
        assert!(
            started.elapsed() < WAIT,
            "VMI never ran; phases seen: {phases:?}"
        );
        if let Some(vmi) = env.vmi("slow").await {
            note(&mut phases, &vmi.data["status"]["phase"]);
        }
        if let Some(vm) = env.vm("slow").await {
            note(&mut statuses, &vm.data["status"]["printableStatus"]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(phases, ["Pending", "Scheduling", "Scheduled", "Running"]);
    assert!(
        started.elapsed() >= delay * 3,
        "booted in {:?}",
        started.elapsed()
    );
    assert!(statuses.contains(&"Starting".to_owned()), "{statuses:?}");
    let vmi = env.vmi("slow").await.expect("VMI");
    assert_eq!(condition(&vmi, "Ready")["status"], "True");

    env.set_run_strategy("slow", "Always", "Halted");
    env.vm_status("slow", "Stopping").await;
    env.vm_status("slow", "Stopped").await;
    env.vmi_gone("slow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_boots_follow_the_run_strategy() {
    let env = env("kv-fail", SimulatorOptions::default()).await;

    // Always: the failed VMI is deleted and a new one started.
    env.sim.fail_next_boot(&env.ns, "always");
    env.apply_vm("always", "runStrategy: Always", &[]);
    env.vm_status("always", "Running").await;
    assert_eq!(env.sim.vmis_created(), 2);

    // RerunOnFailure: restarted after a failure too.
    env.sim.fail_next_boot(&env.ns, "rerun");
    env.apply_vm("rerun", "runStrategy: RerunOnFailure", &[]);
    let vm = env.vm_status("rerun", "Running").await;
    assert_eq!(env.sim.vmis_created(), 4);
    assert!(
        vm.data["status"].get("stateChangeRequests").is_none(),
        "start request consumed"
    );

    // Once: a failed boot stays failed.
    env.sim.fail_next_boot(&env.ns, "once");
    env.apply_vm("once", "runStrategy: Once", &[]);
    let failed = env.vmi_phase("once", "Failed").await;
    env.vm_status("once", "Stopped").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = env.vmi("once").await.expect("failed VMI kept");
    assert_eq!(
        (still.uid(), still.data["status"]["phase"].as_str()),
        (failed.uid(), Some("Failed"))
    );
    assert!(
        !still
            .finalizers()
            .iter()
            .any(|f| f.starts_with("kubevirt.io/")),
        "{:?}",
        still.finalizers()
    );
    assert_eq!(env.sim.vmis_created(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halted_and_invalid_vms() {
    let env = env("kv-halt", SimulatorOptions::default()).await;
    env.apply_vm("stopped", "runStrategy: Halted", &[]);
    env.apply_vm("both", "running: true\n  runStrategy: Always", &[]);
    env.apply_vm("legacy", "running: true", &[]);

    let off = env.vm_status("stopped", "Stopped").await;
    assert!(
        off.finalizers()
            .iter()
            .any(|f| f == VM_CONTROLLER_FINALIZER)
    );
    assert!(
        off.data["status"].get("runStrategy").is_none(),
        "never started, so not recorded"
    );
    // `running: true` is deprecated but still means Always.
    env.vmi_phase("legacy", "Running").await;

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.vmi("stopped").await.is_none());
    let both = env.vm("both").await.expect("VM both");
    assert!(
        both.finalizers().is_empty() && both.data.get("status").is_none(),
        "{both:?}"
    );
    assert!(env.vmi("both").await.is_none());

    // With no VMI to wait for, deleting a stopped VM releases it at once.
    env.kubectl(&["delete", "vm", "stopped", "--wait=false"]);
    eventually("VM stopped is gone", || async {
        env.vm("stopped").await.is_none().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_vms_move_only_on_virtctl_start_and_stop() {
    let env = env("kv-manual", SimulatorOptions::default()).await;
    env.apply_vm("hand", "runStrategy: Manual", &[]);
    env.vm_status("hand", "Stopped").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.vmi("hand").await.is_none(), "Manual started by itself");

    let consumed = |vm: &DynamicObject| vm.data["status"].get("stateChangeRequests").is_none();
    env.sim
        .virtctl(&env.ns, "hand", Virtctl::Start)
        .await
        .expect("start");
    let first = env.vmi_phase("hand", "Running").await;
    eventually("Running with the start request consumed", || async {
        env.vm("hand")
            .await
            .filter(|vm| consumed(vm) && vm.data["status"]["printableStatus"] == "Running")
    })
    .await;

    env.sim
        .virtctl(&env.ns, "hand", Virtctl::Stop)
        .await
        .expect("stop");
    env.vmi_gone("hand").await;
    eventually("Stopped with the stop request consumed", || async {
        env.vm("hand")
            .await
            .filter(|vm| consumed(vm) && vm.data["status"]["printableStatus"] == "Stopped")
    })
    .await;
    // Stopped stays stopped: Manual does not restart.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        env.vmi("hand").await.is_none(),
        "Manual restarted by itself"
    );

    env.sim
        .virtctl(&env.ns, "hand", Virtctl::Start)
        .await
        .expect("start again");
    let second = env.vmi_phase("hand", "Running").await;
    assert_ne!(first.uid(), second.uid(), "a new VMI");
}
