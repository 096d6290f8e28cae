//! `cyberdesk-operator migrate --dry-run`: what the operator will do, once it runs, with the
//! desks and VMs the previous operator left. It reads (desks everywhere, VMs in the VM
//! namespace) and changes nothing; the decisions are the reconciler's own
//! (`controller::adoption`).

use std::collections::HashSet;
use std::fmt::Write as _;

use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::controller::desk::adoption;
use crate::controller::desk::plan::Serving;
use crate::controller::desk::status;
use crate::controller::ownership::owned_by;
use crate::model::{Cyberdesk, DeskNamespaces, Placement, VirtualMachine, names};
use crate::time;

#[derive(clap::Args, Clone, Debug)]
pub struct MigrateConfig {
    /// Only show the plan. Required: the operator adopts desks itself when it runs.
    #[arg(long, required = true)]
    pub dry_run: bool,
    /// As `run --vm-namespace`.
    #[arg(long, env = "CYBERDESK_VM_NAMESPACE", value_parser = crate::config::parse_namespace)]
    pub vm_namespace: Option<String>,
    /// As `run --vm-name-prefix`.
    #[arg(
        long,
        env = "CYBERDESK_VM_NAME_PREFIX",
        default_value = names::VM_PREFIX,
        value_parser = crate::config::parse_prefix
    )]
    pub vm_name_prefix: String,
    /// As `run --default-timeout-ms`: the timeout of a desk without spec.timeoutMs.
    #[arg(long, env = "CYBERDESK_DEFAULT_TIMEOUT_MS", default_value_t = crate::model::cyberdesk::DEFAULT_TIMEOUT_MS)]
    pub default_timeout_ms: i64,
    /// As `run --desk-namespaces`: desks are adopted only in these namespaces.
    #[arg(
        long,
        env = "CYBERDESK_DESK_NAMESPACES",
        value_delimiter = ',',
        value_parser = crate::config::parse_namespace
    )]
    pub desk_namespaces: Vec<String>,
}

impl MigrateConfig {
    pub fn desk_namespaces(&self) -> DeskNamespaces {
        DeskNamespaces::new(self.desk_namespaces.iter().cloned())
    }

    /// Why `run` would refuse these settings, if it would.
    pub fn problem(&self) -> Option<String> {
        self.desk_namespaces()
            .problem(self.placement().namespace.is_some(), false)
    }

    pub fn placement(&self) -> Placement {
        Placement {
            namespace: self.vm_namespace.clone().filter(|ns| !ns.is_empty()),
            prefix: self.vm_name_prefix.clone(),
        }
    }
}

/// What will happen to one desk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Already this operator's: nothing changes.
    Keep,
    /// The previous operator's VM is taken over.
    Adopt {
        vm: String,
        expiry: Option<String>,
        swap_finalizer: bool,
    },
    /// The previous operator's desk has no VM left: one is created.
    Create { vm: String, swap_finalizer: bool },
    /// A VM by the desk's name is someone else's: left alone, the desk reports a conflict.
    Conflict { vm: String },
    /// Outside `--desk-namespaces`: nothing is built or adopted for the desk.
    NotServed,
}

/// The verdict for `desk`, given the VM found for it (by the recorded name, else this
/// operator's name, else the one VM labelled with the desk's name).
pub fn assess(
    desk: &Cyberdesk,
    vm: Option<&VirtualMachine>,
    placement: &Placement,
    serving: &Serving,
    default_timeout_ms: i64,
) -> Verdict {
    let adopts = match serving {
        Serving::NotServed(_) => return Verdict::NotServed,
        Serving::Served { adopts } => *adopts,
    };
    let swap_finalizer = adopts && adoption::has_kopf_finalizer(desk);
    let own_name = placement.vm_name(&desk.name_any());
    if !(adopts && adoption::is_legacy(desk)) {
        return match vm {
            Some(vm) if !owned_by(vm, desk) => Verdict::Conflict { vm: vm.name_any() },
            _ => Verdict::Keep,
        };
    }
    match vm {
        None => Verdict::Create {
            vm: own_name,
            swap_finalizer,
        },
        Some(vm) if owned_by(vm, desk) || adoption::adoptable(vm, desk) => Verdict::Adopt {
            vm: vm.name_any(),
            expiry: status::expiry_time(desk, Some(vm), default_timeout_ms).map(time::format),
            swap_finalizer,
        },
        Some(vm) => Verdict::Conflict { vm: vm.name_any() },
    }
}

/// The VM a desk would be matched with, from the VMs listed in its VM namespace.
fn vm_for<'a>(
    desk: &Cyberdesk,
    vms: &'a [VirtualMachine],
    placement: &Placement,
    adopts: bool,
) -> Option<&'a VirtualMachine> {
    let ns = placement
        .vm_namespace(desk.namespace().as_deref().unwrap_or_default())
        .to_string();
    let in_ns = || {
        vms.iter()
            .filter(|v| v.namespace().as_deref() == Some(ns.as_str()))
    };
    let own = placement.vm_name(&desk.name_any());
    let by_name = adoption::recorded_vm_name(desk).unwrap_or(&own).to_string();
    if let Some(vm) = in_ns().find(|v| v.name_any() == by_name) {
        return Some(vm);
    }
    if !(adopts && adoption::is_legacy(desk)) {
        return None;
    }
    let name = desk.name_any();
    let labelled: Vec<_> = in_ns()
        .filter(|v| v.labels().get(names::LABEL_INSTANCE) == Some(&name))
        .collect();
    (labelled.len() == 1).then(|| labelled[0])
}

/// The plan as text, one line per desk and per VM left without a desk, and a summary.
pub fn render(desks: &[Cyberdesk], vms: &[VirtualMachine], cfg: &MigrateConfig) -> String {
    let placement = cfg.placement();
    let namespaces = cfg.desk_namespaces();
    let mut out = String::new();
    let mut matched = HashSet::new();
    let (mut adopt, mut create, mut keep, mut conflict, mut ignored) = (0, 0, 0, 0, 0);
    for desk in desks {
        let desk_ns = desk.namespace().unwrap_or_default();
        let key = format!("{desk_ns}/{}", desk.name_any());
        let serving = Serving::of(&namespaces, &desk_ns);
        let vm = match serving {
            Serving::NotServed(_) => None,
            Serving::Served { adopts } => vm_for(desk, vms, &placement, adopts),
        };
        if let Some(vm) = vm {
            matched.insert(vm.uid());
        }
        let vm_ns = placement
            .vm_namespace(desk.namespace().as_deref().unwrap_or_default())
            .to_string();
        let finalizer = |swap: bool| {
            if swap {
                format!(
                    "; finalizer {} -> {}",
                    adoption::KOPF_FINALIZER,
                    names::FINALIZER
                )
            } else {
                String::new()
            }
        };
        let line = match assess(desk, vm, &placement, &serving, cfg.default_timeout_ms) {
            Verdict::NotServed => {
                ignored += 1;
                format!(
                    "ignore    {key}: outside --desk-namespaces ({}); nothing is built or adopted for it",
                    namespaces.describe()
                )
            }
            Verdict::Keep => {
                keep += 1;
                format!("keep      {key}: managed by this operator already")
            }
            Verdict::Adopt {
                vm,
                expiry,
                swap_finalizer,
            } => {
                adopt += 1;
                format!(
                    "adopt     {key}: VirtualMachine {vm_ns}/{vm} taken over, expiry {} kept{}",
                    expiry.as_deref().unwrap_or("unknown"),
                    finalizer(swap_finalizer)
                )
            }
            Verdict::Create { vm, swap_finalizer } => {
                create += 1;
                format!(
                    "create    {key}: no VirtualMachine found; {vm_ns}/{vm} will be created{}",
                    finalizer(swap_finalizer)
                )
            }
            Verdict::Conflict { vm } => {
                conflict += 1;
                format!(
                    "conflict  {key}: VirtualMachine {vm_ns}/{vm} belongs to someone else; left alone, the desk reports VirtualMachineConflict"
                )
            }
        };
        let _ = writeln!(out, "{line}");
    }
    let mut orphans = 0;
    for vm in vms {
        let labelled = vm.labels().contains_key(names::LABEL_INSTANCE);
        if labelled && !matched.contains(&vm.uid()) {
            orphans += 1;
            let _ = writeln!(
                out,
                "no desk   VirtualMachine {}/{} (cyberdesk-instance={}): left alone",
                vm.namespace().unwrap_or_default(),
                vm.name_any(),
                vm.labels()[names::LABEL_INSTANCE]
            );
        }
    }
    let _ = writeln!(
        out,
        "{adopt} to adopt, {create} to create, {keep} to keep, {conflict} in conflict, {ignored} outside the desk namespaces, {orphans} VirtualMachines without a desk; dry run: nothing was changed"
    );
    out
}

/// Lists the desks (every namespace) and the VMs (the VM namespace, else every namespace)
/// and renders the plan.
pub async fn dry_run(client: kube::Client, cfg: &MigrateConfig) -> Result<String, kube::Error> {
    let desks: Vec<Cyberdesk> = Api::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let vm_api: Api<VirtualMachine> = match cfg.placement().namespace {
        Some(ns) => Api::namespaced(client, &ns),
        None => Api::all(client),
    };
    let vms = vm_api.list(&ListParams::default()).await?.items;
    let mut desks = desks;
    desks.sort_by_key(|d| (d.namespace(), d.name_any()));
    Ok(render(&desks, &vms, cfg))
}

#[cfg(test)]
mod tests;
