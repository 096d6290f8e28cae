//! What tests read and write about desks: the typed APIs of a desk namespace, desk YAML,
//! events as `kubectl` shows them, times, and a fresh namespace with the simulator and the
//! webhooks answering.

use std::cell::RefCell;
use std::time::Duration;

use cyberdesk_operator::model::{Cyberdesk, VirtualMachine, VirtualMachineInstance};
use kube::Api;

use crate::cluster::Cluster;
use crate::kubevirt::{Simulator, SimulatorHandle, SimulatorOptions};
use crate::wait::eventually;

/// One event as `kubectl get events` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenEvent {
    pub type_: String,
    pub reason: String,
    pub note: String,
    /// How many times it happened: a repeated event is one object whose series counts up.
    pub count: u64,
}

/// The events recorded about object `name` in `ns`, oldest first, read the way a user
/// would: `kubectl get events --field-selector involvedObject.name=NAME`. Both event APIs
/// land there (`note` reads as `message`). A kubectl that fails or prints no list panics
/// with what it said: an unreadable list must never read as "no events".
pub fn events_about(c: &Cluster, ns: &str, name: &str) -> Vec<SeenEvent> {
    let selector = format!("involvedObject.name={name}");
    let out = c
        .kubectl()
        .run(
            &[
                "get",
                "events",
                "-n",
                ns,
                "--field-selector",
                &selector,
                "--sort-by=.metadata.creationTimestamp",
                "-o",
                "json",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("running kubectl get events about {ns}/{name}: {e}"))
        .ok()
        .unwrap_or_else(|e| panic!("events about {ns}/{name}: {e}"));
    let list: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("events about {ns}/{name} are not JSON ({e}): {out}"));
    assert!(
        list["items"].is_array(),
        "events about {ns}/{name}: no item list in {out}"
    );
    let text = |e: &serde_json::Value, key: &str| e[key].as_str().unwrap_or("").to_string();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| SeenEvent {
            type_: text(e, "type"),
            reason: text(e, "reason"),
            note: text(e, "message"),
            count: e["series"]["count"]
                .as_u64()
                .or_else(|| e["count"].as_u64())
                .unwrap_or(1),
        })
        .collect()
}

/// Waits for an event with `reason` about `name`, returning it.
pub async fn wait_event(
    c: &Cluster,
    ns: &str,
    name: &str,
    reason: &str,
    within: Duration,
) -> SeenEvent {
    let what = format!("a {reason} event about {ns}/{name}");
    eventually(within, &what, || async {
        events_about(c, ns, name)
            .into_iter()
            .find(|e| e.reason == reason)
    })
    .await
}

/// Milliseconds since the Unix epoch of an RFC 3339 time the operator wrote.
pub fn epoch_ms(rfc3339: &str) -> i64 {
    cyberdesk_operator::time::parse(rfc3339)
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {rfc3339:?}"))
        .as_millisecond()
}

/// Milliseconds since the Unix epoch now, on the clock the operator also reads.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A field of an object as kubectl prints it with `-o jsonpath`, e.g. what KubeVirt wrote
/// into a VMI, read without the operator's model.
pub fn jsonpath(c: &Cluster, ns: &str, what: &str, path: &str) -> String {
    c.kubectl()
        .run(
            &["get", what, "-n", ns, "-o", &format!("jsonpath={path}")],
            None,
        )
        .expect("kubectl")
        .stdout
}

pub fn desk_yaml(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cyberdesk.io/v1alpha1\nkind: Cyberdesk\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec: {spec}\n"
    )
}

/// Whether the desk's status shows `phase`.
pub fn in_phase(desk: &Cyberdesk, phase: &str) -> bool {
    desk.status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| p.as_str())
        == Some(phase)
}

pub struct Apis {
    pub desks: Api<Cyberdesk>,
    pub vms: Api<VirtualMachine>,
    pub vmis: Api<VirtualMachineInstance>,
}

impl Apis {
    pub fn new(client: &kube::Client, ns: &str) -> Self {
        Self {
            desks: Api::namespaced(client.clone(), ns),
            vms: Api::namespaced(client.clone(), ns),
            vmis: Api::namespaced(client.clone(), ns),
        }
    }

    /// How many desks in the namespace report `phase`, read from the apiserver's watch
    /// cache (callers poll; a quorum read of every desk per look would load the apiserver
    /// the benchmarks measure). A failed list panics: it must not read as "none".
    pub async fn count_in_phase(&self, phase: &str) -> usize {
        let params = kube::api::ListParams::default().match_any();
        let list = self
            .desks
            .list(&params)
            .await
            .unwrap_or_else(|e| panic!("listing desks to count those {phase}: {e}"));
        list.items.iter().filter(|d| in_phase(d, phase)).count()
    }

    pub async fn phase(&self, name: &str) -> Option<String> {
        let desk = self.desks.get_opt(name).await.ok()??;
        desk.status?.phase.map(|p| p.as_str().to_string())
    }

    /// Waits for the desk's condition `type_` to carry `reason`, returning the condition.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        within: Duration,
    ) -> cyberdesk_operator::model::conditions::Condition {
        let what = format!("{name}: condition {type_} with reason {reason}");
        eventually(within, &what, || async {
            let desk = self.desks.get_opt(name).await.ok()??;
            cyberdesk_operator::model::conditions::find(&desk.status?.conditions, type_)
                .filter(|c| c.reason == reason)
                .cloned()
        })
        .await
    }

    /// A Running desk started with a long timeout gets one that makes it expire about
    /// `from_now` from now (so a slow start never eats into the window a test watches);
    /// `spec` holds the other spec fields as YAML flow entries. Returns the new expiry in
    /// epoch milliseconds, once the status shows it.
    pub async fn expire_in(&self, c: &Cluster, name: &str, spec: &str, from_now: Duration) -> i64 {
        let desk = self.desks.get(name).await.expect("desk");
        let ns = desk.metadata.namespace.expect("namespace");
        let started = desk.status.and_then(|s| s.start_time).expect("startTime");
        let timeout_ms = now_ms() - epoch_ms(&started) + from_now.as_millis() as i64;
        let extra = if spec.is_empty() {
            String::new()
        } else {
            format!(", {spec}")
        };
        let yaml = desk_yaml(&ns, name, &format!("{{timeoutMs: {timeout_ms}{extra}}}"));
        let out = c.kubectl().apply(&yaml, &[]).expect("kubectl");
        assert!(out.success, "{}", out.stderr);
        let expected = epoch_ms(&started) + timeout_ms;
        eventually(
            Duration::from_secs(10),
            "the new expiry in the status",
            || async {
                let expiry = self.desks.get(name).await.ok()?.status?.expiry_time?;
                (epoch_ms(&expiry) == expected).then_some(expected)
            },
        )
        .await
    }

    /// Waits for the desk to report `phase`, returning it; the panic shows the last status.
    pub async fn wait_phase(&self, name: &str, phase: &str, within: Duration) -> Cyberdesk {
        let last = RefCell::new(None);
        let seen = crate::wait::until(within, || async {
            let desk = self.desks.get_opt(name).await.ok()??;
            let status = desk.status.clone();
            let reached = status.as_ref().and_then(|s| s.phase).map(|p| p.as_str()) == Some(phase);
            *last.borrow_mut() = status;
            reached.then_some(desk)
        })
        .await;
        seen.unwrap_or_else(|| {
            panic!(
                "timed out after {within:?} waiting for {name} to reach phase {phase}; last status: {:?}",
                last.borrow()
            )
        })
    }
}

/// A fresh namespace for one test, the KubeVirt simulator (with `opts`) scoped to it, and
/// the webhooks answering there.
pub async fn desk_namespace(
    c: &Cluster,
    prefix: &str,
    opts: SimulatorOptions,
) -> (String, Apis, SimulatorHandle) {
    let client = c.client().await;
    let ns = crate::cluster::namespace(&client, prefix).await;
    let sim = Simulator::start(client.clone(), opts.within(&ns));
    wait_webhooks_active(c, &ns).await;
    (ns.clone(), Apis::new(&client, &ns), sim)
}

/// The apiserver picks up a new webhook configuration a moment after it is written; waits
/// until a server-side dry run in `ns` comes back defaulted by our mutating webhook.
pub async fn wait_webhooks_active(c: &Cluster, ns: &str) {
    let probe = desk_yaml(ns, "probe", "{}");
    eventually(Duration::from_secs(30), "webhooks active", || async {
        let out = c
            .kubectl()
            .apply(&probe, &["--dry-run=server", "-o", "json"])
            .ok()?;
        (out.success && out.stdout.contains("vm-cleanup")).then_some(())
    })
    .await;
}
