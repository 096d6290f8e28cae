//! What a warm pool needs, decided from its VMs as the cache shows them (pure).
//!
//! The pool keeps `spec.size` booted VMs no desk has claimed. It boots at most
//! `maxBooting` at once, replaces VMs that failed or outlived `maxIdleMs` unclaimed, and
//! scales down by deleting unclaimed VMs, those still booting first. Claimed VMs belong to their desks: the pool only counts
//! them.

use jiff::Timestamp;

use crate::model::conditions::{self, ConditionStatus, Observed, set_condition};
use crate::model::kubevirt::VM_ERROR_STATES;
use crate::model::{CyberdeskPool, CyberdeskPoolStatus, VirtualMachine};

/// Where one of the pool's VMs stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Unclaimed, not ready yet.
    Booting,
    /// Unclaimed, running and ready: a desk may claim it.
    Ready,
    /// Unclaimed and in an error state: replaced.
    Failed,
    /// Taken back by the pool, to be deleted (a pass stopped between the two steps).
    Retiring,
    /// Handed to a desk; no longer the pool's to manage.
    Claimed,
    /// Being deleted.
    Deleting,
}

/// One VM of the pool, as far as the plan reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub state: MemberState,
    pub created: Option<Timestamp>,
}

/// The state of `vm` in the pool with uid `pool_uid`; `None` when the VM is not this
/// pool's (an earlier pool of the same name, or no pool at all).
pub fn member_state(vm: &VirtualMachine, pool_uid: &str) -> Option<MemberState> {
    vm.pool()?;
    if vm.is_claimed_from_pool() {
        return Some(if vm.metadata.deletion_timestamp.is_some() {
            MemberState::Deleting
        } else {
            MemberState::Claimed
        });
    }
    let ours = vm
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == pool_uid);
    if !ours {
        return None;
    }
    if vm.metadata.deletion_timestamp.is_some() {
        return Some(MemberState::Deleting);
    }
    if vm.is_retiring_from_pool() {
        return Some(MemberState::Retiring);
    }
    if !vm.is_available_in_pool() {
        return None;
    }
    let printable = vm.printable_status();
    // No node fits: capacity may come back, and a new VM would wait just the same.
    let failed = printable.is_some_and(|s| VM_ERROR_STATES.contains(&s) && s != UNSCHEDULABLE);
    Some(if failed {
        MemberState::Failed
    } else if printable == Some("Running") && vm.is_ready() {
        MemberState::Ready
    } else {
        MemberState::Booting
    })
}

/// A VM KubeVirt cannot schedule yet; it stays in the pool as booting.
const UNSCHEDULABLE: &str = "ErrorUnschedulable";

/// What one pass over a pool does.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolPlan {
    /// How many VMs to boot now.
    pub create: usize,
    /// Unclaimed VMs to take back and delete (failed ones, expired ones, then the surplus).
    pub retire: Vec<String>,
    /// Of `retire`, why each replaced VM goes: (name, `failed` | `expired`); the surplus
    /// is not replaced and not listed.
    pub replaced: Vec<(String, &'static str)>,
    /// When the next unclaimed VM reaches the pool's `maxIdleMs`, if any does.
    pub next_expiry: Option<Timestamp>,
    /// VMs taken back earlier whose delete did not happen yet.
    pub delete: Vec<String>,
    /// The status to write, when it differs from the stored one.
    pub status: Option<CyberdeskPoolStatus>,
}

fn count(members: &[Member], state: MemberState) -> usize {
    members.iter().filter(|m| m.state == state).count()
}

/// Newest first: the VM with the least boot time spent goes first.
fn newest_first(members: &[Member], state: MemberState) -> Vec<&Member> {
    let mut of: Vec<&Member> = members.iter().filter(|m| m.state == state).collect();
    of.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.name.cmp(&b.name)));
    of
}

/// The plan for `pool` with `members`. `template_problem`: why the pool's VMs cannot be
/// rendered, if they cannot (nothing is booted then; the pool reports it).
pub fn plan_pool(
    pool: &CyberdeskPool,
    members: &[Member],
    template_problem: Option<&str>,
    now: Timestamp,
) -> PoolPlan {
    let size = usize::try_from(pool.spec.size).unwrap_or(0);
    let max_booting = usize::try_from(pool.max_booting()).unwrap_or(1);
    // An unclaimed VM older than maxIdleMs is replaced like a failed one: the pool's user
    // data never sits in a VM longer than the pool allows.
    let expires = |m: &Member| {
        let unclaimed = matches!(m.state, MemberState::Ready | MemberState::Booting);
        m.created
            .filter(|_| unclaimed)
            .and_then(|c| c.checked_add(pool.max_idle()).ok())
    };
    let (expired, fresh): (Vec<Member>, Vec<Member>) = members
        .iter()
        .cloned()
        .partition(|m| expires(m).is_some_and(|at| at <= now));
    let next_expiry = fresh.iter().filter_map(expires).min();
    let members = fresh.as_slice();
    let ready = count(members, MemberState::Ready);
    let booting = count(members, MemberState::Booting);
    let claimed = count(members, MemberState::Claimed);

    let mut replaced: Vec<(String, &'static str)> = newest_first(members, MemberState::Failed)
        .into_iter()
        .map(|m| (m.name.clone(), "failed"))
        .collect();
    let mut oldest_first: Vec<&Member> = expired.iter().collect();
    oldest_first.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    replaced.extend(
        oldest_first
            .into_iter()
            .map(|m| (m.name.clone(), "expired")),
    );
    let mut retire: Vec<String> = replaced.iter().map(|(name, _)| name.clone()).collect();
    let delete = newest_first(members, MemberState::Retiring)
        .into_iter()
        .map(|m| m.name.clone())
        .collect();
    let live = ready + booting;
    let create = if live > size {
        let surplus = live - size;
        let booting_first = newest_first(members, MemberState::Booting)
            .into_iter()
            .chain(newest_first(members, MemberState::Ready));
        retire.extend(booting_first.take(surplus).map(|m| m.name.clone()));
        0
    } else if template_problem.is_some() {
        0
    } else {
        (size - live).min(max_booting.saturating_sub(booting))
    };

    let desired = desired_status(pool, ready, booting, claimed, template_problem, now);
    PoolPlan {
        create,
        retire,
        replaced,
        next_expiry,
        delete,
        status: (pool.status.as_ref() != Some(&desired)).then_some(desired),
    }
}

fn desired_status(
    pool: &CyberdeskPool,
    ready: usize,
    booting: usize,
    claimed: usize,
    template_problem: Option<&str>,
    now: Timestamp,
) -> CyberdeskPoolStatus {
    let at = Observed {
        now,
        generation: pool.metadata.generation,
    };
    let current = pool.status.clone().unwrap_or_default();
    let mut conds = current.conditions;
    let size = usize::try_from(pool.spec.size).unwrap_or(0);
    let full = if ready >= size {
        at.condition(
            conditions::READY,
            ConditionStatus::True,
            "Filled",
            format!("{ready} of {size} VMs ready"),
        )
    } else {
        at.condition(
            conditions::READY,
            ConditionStatus::False,
            if template_problem.is_some() {
                "TemplateInvalid"
            } else {
                "Filling"
            },
            format!("{ready} of {size} VMs ready, {booting} booting"),
        )
    };
    set_condition(&mut conds, full);
    let template = match template_problem {
        Some(problem) => at.condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::False,
            "TemplateInvalid",
            problem.to_string(),
        ),
        None => at.condition(
            conditions::TEMPLATE_VALID,
            ConditionStatus::True,
            "TemplateRendered",
            "the VM template renders",
        ),
    };
    set_condition(&mut conds, template);
    let to_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    CyberdeskPoolStatus {
        ready: to_i32(ready),
        booting: to_i32(booting),
        claimed: to_i32(claimed),
        observed_generation: pool.metadata.generation,
        conditions: conds,
    }
}

/// The pool's ready VMs a desk may try to claim, in the order to try them: rotated by
/// `seed` (the desk's), so desks claiming at the same moment mostly try different VMs.
/// `taken`: VMs this process is claiming or has claimed (the cache may not show it yet).
/// A VM past the pool's `maxIdleMs` is not handed out, even before the pool replaces it.
pub fn claim_order(
    members: &[VirtualMachine],
    pool: &CyberdeskPool,
    taken: impl Fn(&str) -> bool,
    seed: u64,
    now: Timestamp,
) -> Vec<String> {
    let pool_uid = pool.metadata.uid.as_deref().unwrap_or_default();
    let young = |vm: &VirtualMachine| {
        vm.metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| t.0.checked_add(pool.max_idle()).ok())
            .is_none_or(|expiry| expiry > now)
    };
    let mut ready: Vec<String> = members
        .iter()
        .filter(|vm| member_state(vm, pool_uid) == Some(MemberState::Ready))
        .filter(|vm| young(vm))
        .filter_map(|vm| vm.metadata.name.clone())
        .filter(|name| !taken(name))
        .collect();
    ready.sort();
    if !ready.is_empty() {
        let start = (seed % ready.len() as u64) as usize;
        ready.rotate_left(start);
    }
    ready
}

#[cfg(test)]
mod tests;
