//! What the checker saw, as plain records, and the invariants over them. Pure: the
//! watches in `checker` fill a [`History`]; [`History::violations`] judges it at any
//! moment, with the injected faults as the only excuse for lateness.

use std::collections::{BTreeMap, HashMap};

/// Milliseconds since the epoch: every time here is wall-clock, the same clock as the
/// operator's `expiryTime`.
pub type Ms = i64;

/// How late a timeout or a deletion may be on a quiet cluster, and how long a desk may
/// stay before `Running` on one: generous on a loaded 2-core machine, far below a
/// "stuck" desk.
pub const HALT_BOUND: Ms = 30_000;
pub const DELETE_BOUND: Ms = 30_000;
pub const START_BOUND: Ms = 180_000;
/// How long a VM may outlive its desk before it counts as leaked.
pub const ORPHAN_BOUND: Ms = 60_000;
/// What each fault adds to the bounds above when it overlaps them: its own length plus
/// the recovery it causes (a new leader waits out the 15 s Lease, watches relist).
pub const RECOVERY: Ms = 20_000;

#[derive(Clone, Debug, Default)]
pub struct DeskRecord {
    pub namespace: String,
    pub name: String,
    pub first_seen: Ms,
    pub delete_action: bool,
    pub pooled: bool,
    /// The latest `status.expiryTime`.
    pub expiry: Option<Ms>,
    pub phase: String,
    pub phase_since: Ms,
    pub running_at: Option<Ms>,
    /// When the desk was first seen `TimedOut`.
    pub timed_out_at: Option<Ms>,
    /// When its live VM was first seen halted or gone at or after expiry.
    pub halted_at: Option<Ms>,
    pub deletion_seen: Option<Ms>,
    pub gone: Option<Ms>,
    /// The workload deleted this desk (before it expired, or as cleanup).
    pub deleted_by_user: bool,
}

#[derive(Clone, Debug, Default)]
pub struct VmRecord {
    pub namespace: String,
    pub name: String,
    pub first_seen: Ms,
    pub gone: Option<Ms>,
    pub halted: bool,
    /// The desks (by uid) that owned it, in order; a pool VM starts with none.
    pub desks: Vec<String>,
    /// Owned by a pool and by no desk (an available warm VM).
    pub pool_owned: bool,
}

/// A fault as it happened; `to` is `Ms::MAX` while it lasts.
#[derive(Clone, Debug)]
pub struct FaultWindow {
    pub kind: &'static str,
    pub from: Ms,
    pub to: Ms,
}

impl FaultWindow {
    /// Whether the fault takes the control plane or the leader away (and with them the
    /// chance to record what was just done).
    pub fn disrupts_writes(&self) -> bool {
        !matches!(
            self.kind,
            "notifier-errors" | "notifier-hangs" | "stuck-start" | "vmi-failed"
        )
    }
}

#[derive(Clone, Debug, Default)]
pub struct History {
    pub desks: HashMap<String, DeskRecord>,
    pub vms: HashMap<String, VmRecord>,
    /// VMs the workload deleted by hand, per desk uid.
    pub hand_deleted: HashMap<String, usize>,
    pub faults: Vec<FaultWindow>,
    /// When each successful (2xx) ready call per `namespace/name` arrived.
    pub ready_delivered: HashMap<String, Vec<Ms>>,
    /// Moments two replicas said they led at once.
    pub two_leaders: Vec<Ms>,
    /// Moments a replica exited without being killed (a Deployment restarts it).
    pub own_exits: Vec<Ms>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub invariant: &'static str,
    pub what: String,
}

impl History {
    /// The extra time faults overlapping `[from, to]` excuse, as of `now` (a fault still
    /// under way excuses everything up to now).
    pub fn excused(&self, from: Ms, to: Ms, now: Ms) -> Ms {
        self.faults
            .iter()
            .map(|f| (f.from, f.to.min(now)))
            .filter(|&(f_from, f_to)| f_from <= to && f_to.saturating_add(RECOVERY) >= from)
            .map(|(f_from, f_to)| f_to - f_from + RECOVERY)
            .sum()
    }

    fn late(&self, since: Ms, bound: Ms, now: Ms) -> bool {
        now > since + bound + self.excused(since, since + bound, now)
    }

    /// Whether something done at `t` may not have been recorded: a fault that takes the
    /// leader or the apiserver away began within 10 s after it (or was under way).
    fn record_may_be_lost(&self, t: Ms) -> bool {
        self.faults
            .iter()
            .filter(|f| f.disrupts_writes())
            .any(|f| f.from <= t + 10_000 && f.to.saturating_add(RECOVERY) >= t)
    }

    /// A desk's update may show its timeout enforced: a desk that never had a VM says
    /// `TimedOut`, or its expiry (say shortened) has come and its live VM was already seen
    /// halted (the VM's event came before the desk's: nothing about the VM changes after).
    pub fn desk_halt_seen(&mut self, desk_uid: &str, now: Ms) {
        let live: Vec<bool> = self
            .vms
            .values()
            .filter(|v| v.gone.is_none() && v.desks.last().map(String::as_str) == Some(desk_uid))
            .map(|v| v.halted)
            .collect();
        if let Some(d) = self.desks.get_mut(desk_uid)
            && d.halted_at.is_none()
        {
            let never_had_vm = live.is_empty() && d.phase == "TimedOut";
            let expired = d.expiry.is_some_and(|e| e <= now + 1_000);
            let vm_halted = !live.is_empty() && live.iter().all(|&h| h);
            if never_had_vm || (expired && vm_halted) {
                d.halted_at = Some(now);
            }
        }
    }

    /// A desk gone before the expiry the checker last saw, while a fault kept its watch
    /// from seeing the last writes: a shortened timeout, the `TimedOut` status with the
    /// new expiry and the deletion (Delete) may all have passed unseen, so the expiry
    /// it holds is not the one the operator enforced.
    fn went_before_a_missed_expiry(&self, d: &DeskRecord, expiry: Ms) -> bool {
        d.gone.is_some_and(|gone| {
            gone < expiry && self.record_may_be_lost(d.deletion_seen.unwrap_or(gone).min(gone))
        })
    }

    /// Whether `t` falls in a fault (or the recovery after it) of the kinds `pick` keeps.
    fn during(&self, t: Ms, pick: impl Fn(&FaultWindow) -> bool) -> bool {
        self.faults
            .iter()
            .filter(|f| pick(f))
            .any(|f| t >= f.from && t <= f.to.saturating_add(RECOVERY))
    }

    /// Every invariant broken as of `now`; `settled` at the end, when nothing may be
    /// left pending.
    pub fn violations(&self, now: Ms) -> Vec<Violation> {
        let mut out = Vec::new();
        let mut push = |invariant, what: String| out.push(Violation { invariant, what });
        // At most one live VM per desk, and no more VMs than one plus those deleted by hand.
        let mut per_desk: HashMap<&str, Vec<&VmRecord>> = HashMap::new();
        for vm in self.vms.values() {
            for d in &vm.desks {
                per_desk.entry(d).or_default().push(vm);
            }
            if vm.desks.len() > 1 {
                push(
                    "one desk per VM",
                    format!(
                        "VM {}/{} was given to desks {:?}",
                        vm.namespace, vm.name, vm.desks
                    ),
                );
            }
        }
        for (uid, vms) in &per_desk {
            let desk = self.desks.get(*uid);
            let label = desk.map_or_else(
                || uid.to_string(),
                |d| format!("{}/{}", d.namespace, d.name),
            );
            let live = vms.iter().filter(|v| v.gone.is_none()).count();
            if live > 1 {
                push(
                    "one VM per desk",
                    format!("desk {label} has {live} VMs at once"),
                );
            }
            let allowed = 1 + self.hand_deleted.get(*uid).copied().unwrap_or(0);
            if vms.len() > allowed {
                push(
                    "one VM per desk",
                    format!("desk {label} had {} VMs, {allowed} allowed", vms.len()),
                );
            }
        }
        // No VM outlives its desk.
        for vm in self
            .vms
            .values()
            .filter(|v| v.gone.is_none() && !v.pool_owned)
        {
            let desk_gone = vm
                .desks
                .last()
                .and_then(|d| self.desks.get(d))
                .map_or(Some(vm.first_seen), |d| d.gone);
            if let Some(since) = desk_gone
                && self.late(since, ORPHAN_BOUND, now)
            {
                push(
                    "no orphan VM",
                    format!("VM {}/{} outlived its desk", vm.namespace, vm.name),
                );
            }
        }
        for d in self.desks.values() {
            let label = format!("{}/{}", d.namespace, d.name);
            // Expiry enforced: the VM halted (Stop) or gone (Delete).
            if let Some(expiry) = d.expiry
                && d.halted_at.is_none()
                && !(d.deleted_by_user && d.deletion_seen.is_some_and(|t| t <= expiry))
                && !self.went_before_a_missed_expiry(d, expiry)
                && self.late(expiry, HALT_BOUND, now)
            {
                push(
                    "timeouts enforced",
                    format!("desk {label} expired at {expiry} and was not halted"),
                );
            }
            if let Some(asked) = d.deletion_seen
                && d.gone.is_none()
                && self.late(asked, DELETE_BOUND, now)
            {
                push(
                    "deletions complete",
                    format!("desk {label} still there since deletion at {asked}"),
                );
            }
            let starting = matches!(
                d.phase.as_str(),
                "" | "Pending" | "Provisioning" | "Starting"
            );
            if starting
                && d.gone.is_none()
                && d.deletion_seen.is_none()
                && d.expiry.is_none_or(|e| e > now)
                && self.late(d.phase_since, START_BOUND, now)
            {
                push(
                    "no stuck desk",
                    format!(
                        "desk {label} in phase {:?} since {}",
                        d.phase, d.phase_since
                    ),
                );
            }
            let key = format!("{}/{}", d.namespace, d.name);
            // Delivered, then the leader or the apiserver went away before the delivery
            // was recorded in the status: the next leader calls again (at least once).
            if let Some(calls) = self
                .ready_delivered
                .get(&key)
                .filter(|c| c.len() > 1)
                .filter(|c| !self.record_may_be_lost(c[0]))
            {
                push(
                    "ready delivered once",
                    format!("desk {label}: successful ready calls at {calls:?}"),
                );
            }
        }
        for &t in &self.two_leaders {
            push("one leader", format!("two replicas led at {t}"));
        }
        // A replica may exit when the control plane is away (a lost Lease, a start that
        // cannot reach it); never otherwise.
        for &t in &self.own_exits {
            if !self.during(t, FaultWindow::disrupts_writes) {
                push(
                    "no unexplained exit",
                    format!("a replica exited at {t} outside any fault"),
                );
            }
        }
        out.sort();
        out
    }

    /// Timeout lags in ms (expiry → halted as the checker's watch saw it), split by
    /// action: (Stop, Delete). Slightly negative values are `expiryTime`'s rounding.
    pub fn halt_lags(&self) -> (Vec<Ms>, Vec<Ms>) {
        let (mut stop, mut delete) = (Vec::new(), Vec::new());
        for d in self.desks.values() {
            if let (Some(e), Some(h)) = (d.expiry, d.halted_at) {
                let lag = h - e;
                if d.delete_action {
                    delete.push(lag)
                } else {
                    stop.push(lag)
                }
            }
        }
        stop.sort_unstable();
        delete.sort_unstable();
        (stop, delete)
    }

    /// Deletion latencies in ms (deletionTimestamp seen → desk gone).
    pub fn deletion_lags(&self) -> Vec<Ms> {
        let mut v: Vec<Ms> = self
            .desks
            .values()
            .filter_map(|d| Some(d.gone? - d.deletion_seen?))
            .collect();
        v.sort_unstable();
        v
    }

    /// Ready calls missing for desks that ran for a minute away from any notifier fault.
    pub fn ready_missing(&self, now: Ms) -> Vec<String> {
        let notifier_down: Vec<&FaultWindow> = self
            .faults
            .iter()
            .filter(|f| f.kind.starts_with("notifier"))
            .collect();
        let mut out: Vec<String> = self
            .desks
            .values()
            .filter(|d| {
                let Some(ran) = d.running_at else {
                    return false;
                };
                let key = format!("{}/{}", d.namespace, d.name);
                // The notifier retries for about two minutes (1 s doubling to 60 s).
                let quiet = notifier_down
                    .iter()
                    .all(|f| f.to.saturating_add(10_000) < ran || f.from > ran + 130_000);
                now > ran + 60_000 && quiet && !self.ready_delivered.contains_key(&key)
            })
            .map(|d| format!("{}/{}", d.namespace, d.name))
            .collect();
        out.sort();
        out
    }

    /// Faults by kind, for the report.
    pub fn faults_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for f in &self.faults {
            *m.entry(f.kind).or_insert(0) += 1;
        }
        m
    }
}

/// An RFC 3339 time in ms since the epoch (the checker's own parse, not the operator's).
pub fn parse_ms(rfc3339: &str) -> Option<Ms> {
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// The `q` quantile (0..=1) of sorted values.
pub fn quantile(sorted: &[Ms], q: f64) -> Option<Ms> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desk(name: &str) -> DeskRecord {
        DeskRecord {
            namespace: "ns".into(),
            name: name.into(),
            phase: "Running".into(),
            ..Default::default()
        }
    }

    fn vm(name: &str, desk: &str) -> VmRecord {
        VmRecord {
            namespace: "ns".into(),
            name: name.into(),
            desks: vec![desk.into()],
            ..Default::default()
        }
    }

    fn invariants(h: &History, now: Ms) -> Vec<&'static str> {
        h.violations(now).into_iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_second_vm_for_a_desk_is_a_violation_unless_the_first_was_deleted_by_hand() {
        let mut h = History::default();
        h.desks.insert("d1".into(), desk("a"));
        h.vms.insert(
            "v1".into(),
            VmRecord {
                gone: Some(5),
                ..vm("cyberdesk-a", "d1")
            },
        );
        h.vms.insert("v2".into(), vm("cyberdesk-a", "d1"));
        assert_eq!(invariants(&h, 10), vec!["one VM per desk"]);
        h.hand_deleted.insert("d1".into(), 1);
        assert!(invariants(&h, 10).is_empty());
        h.vms.get_mut("v1").unwrap().gone = None;
        assert_eq!(
            invariants(&h, 10),
            vec!["one VM per desk"],
            "two live at once"
        );
    }

    #[test]
    fn an_expired_desk_not_halted_is_late_after_the_bound_plus_what_faults_excuse() {
        let mut h = History::default();
        h.desks.insert(
            "d1".into(),
            DeskRecord {
                expiry: Some(1_000),
                ..desk("a")
            },
        );
        assert!(invariants(&h, 1_000 + HALT_BOUND).is_empty());
        assert_eq!(
            invariants(&h, 1_001 + HALT_BOUND),
            vec!["timeouts enforced"]
        );
        h.faults.push(FaultWindow {
            kind: "apiserver-down",
            from: 0,
            to: 10_000,
        });
        assert!(invariants(&h, 1_001 + HALT_BOUND).is_empty());
        let excused = 10_000 + RECOVERY;
        assert_eq!(
            invariants(&h, 1_001 + HALT_BOUND + excused),
            vec!["timeouts enforced"]
        );
        h.desks.get_mut("d1").unwrap().halted_at = Some(2_000);
        assert!(invariants(&h, 1_000_000).is_empty());
        assert_eq!(h.halt_lags().0, vec![1_000]);
        h.own_exits.push(5_000);
        assert!(invariants(&h, 1_000_000).is_empty(), "inside the outage");
        h.own_exits.push(10_000 + RECOVERY + 1);
        assert_eq!(invariants(&h, 1_000_000), vec!["no unexplained exit"]);
    }

    #[test]
    fn a_vm_seen_halted_before_the_desk_shows_its_new_expiry_counts_as_halted() {
        let mut h = History::default();
        h.desks.insert(
            "d1".into(),
            DeskRecord {
                expiry: Some(100_000),
                ..desk("a")
            },
        );
        h.vms.insert(
            "v1".into(),
            VmRecord {
                halted: true,
                ..vm("cyberdesk-a", "d1")
            },
        );
        // The halt came first (the timeout was shortened): nothing to judge yet.
        h.desk_halt_seen("d1", 40_000);
        assert_eq!(h.desks["d1"].halted_at, None);
        // The desk's update with the shortened expiry arrives.
        h.desks.get_mut("d1").unwrap().expiry = Some(39_000);
        h.desk_halt_seen("d1", 41_000);
        assert_eq!(h.desks["d1"].halted_at, Some(41_000));
        assert!(invariants(&h, 1_000_000).is_empty());
        // A VM still running is not a halt.
        h.desks.get_mut("d1").unwrap().halted_at = None;
        h.vms.get_mut("v1").unwrap().halted = false;
        h.desk_halt_seen("d1", 42_000);
        assert_eq!(h.desks["d1"].halted_at, None);
    }

    #[test]
    fn a_desk_gone_before_a_stale_expiry_is_judged_only_outside_faults() {
        // Its timeout was shortened, it timed out and was deleted while a fault kept the
        // checker's watch away: the checker holds the first expiry, after it went.
        let mut h = History::default();
        h.desks.insert(
            "d1".into(),
            DeskRecord {
                expiry: Some(100_000),
                deletion_seen: Some(50_000),
                gone: Some(55_000),
                ..desk("a")
            },
        );
        let late = 100_001 + HALT_BOUND;
        assert_eq!(
            invariants(&h, late),
            vec!["timeouts enforced"],
            "no fault: an early deletion stays a violation"
        );
        h.faults.push(FaultWindow {
            kind: "etcd-restart",
            from: 53_000,
            to: 58_000,
        });
        assert!(invariants(&h, late).is_empty());
        // A fault that does not touch the watches excuses nothing.
        h.faults[0].kind = "notifier-errors";
        assert_eq!(invariants(&h, late), vec!["timeouts enforced"]);
    }

    #[test]
    fn a_vm_outliving_its_desk_and_a_desk_stuck_deleting_are_violations() {
        let mut h = History::default();
        h.desks.insert(
            "d1".into(),
            DeskRecord {
                deletion_seen: Some(0),
                gone: Some(100),
                ..desk("a")
            },
        );
        h.vms.insert("v1".into(), vm("cyberdesk-a", "d1"));
        assert!(invariants(&h, 100 + ORPHAN_BOUND).is_empty());
        assert_eq!(invariants(&h, 101 + ORPHAN_BOUND), vec!["no orphan VM"]);
        h.desks.insert(
            "d2".into(),
            DeskRecord {
                deletion_seen: Some(0),
                ..desk("b")
            },
        );
        assert!(invariants(&h, 101 + ORPHAN_BOUND).contains(&"deletions complete"));
    }

    #[test]
    fn two_successful_ready_calls_and_a_desk_stuck_starting_are_violations() {
        let mut h = History::default();
        h.desks.insert(
            "d1".into(),
            DeskRecord {
                phase: "Starting".into(),
                ..desk("a")
            },
        );
        assert_eq!(invariants(&h, START_BOUND + 1), vec!["no stuck desk"]);
        h.desks.get_mut("d1").unwrap().phase = "Running".into();
        h.ready_delivered.insert("ns/a".into(), vec![1, 2]);
        assert_eq!(
            invariants(&h, START_BOUND + 1),
            vec!["ready delivered once"]
        );
        // The leader was killed 5 s after the first call: the second is at-least-once.
        h.faults.push(FaultWindow {
            kind: "kill-leader",
            from: 5_001,
            to: 5_001,
        });
        assert!(invariants(&h, START_BOUND + 1).is_empty());
        // A notifier fault is no excuse.
        h.faults[0].kind = "notifier-errors";
        assert_eq!(
            invariants(&h, START_BOUND + 1),
            vec!["ready delivered once"]
        );
    }

    #[test]
    fn quantiles_pick_from_sorted_values() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.5), Some(3));
        assert_eq!(quantile(&[1, 2, 3, 4, 5], 0.99), Some(5));
    }
}
