//! The fault schedule: which fault, when and for how long, drawn from a seed so a run that
//! found a violation can be replayed exactly. Pure: no clock, no cluster.

use std::fmt;
use std::time::Duration;

/// Every kind of fault the soak injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL of the Lease holder (no release: the other replica waits for expiry).
    KillLeader,
    /// SIGTERM of either replica, as a rollout does.
    TerminateReplica,
    /// kube-apiserver stopped, then started again.
    ApiserverDown,
    /// etcd stopped and started again on the same data.
    EtcdRestart,
    /// A VMI's start held with `ErrImagePull` or `Unschedulable`, then released.
    StuckStart,
    /// A running VMI reported `Failed` (the VM restarts it, as KubeVirt does).
    VmiFailed,
    /// The ready endpoint answers 500.
    NotifierErrors,
    /// The ready endpoint never answers.
    NotifierHangs,
    /// The replica the webhook Service routes to is killed.
    KillWebhookReplica,
}

impl FaultKind {
    pub const ALL: [FaultKind; 9] = [
        FaultKind::KillLeader,
        FaultKind::TerminateReplica,
        FaultKind::ApiserverDown,
        FaultKind::EtcdRestart,
        FaultKind::StuckStart,
        FaultKind::VmiFailed,
        FaultKind::NotifierErrors,
        FaultKind::NotifierHangs,
        FaultKind::KillWebhookReplica,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::TerminateReplica => "terminate-replica",
            FaultKind::ApiserverDown => "apiserver-down",
            FaultKind::EtcdRestart => "etcd-restart",
            FaultKind::StuckStart => "stuck-start",
            FaultKind::VmiFailed => "vmi-failed",
            FaultKind::NotifierErrors => "notifier-errors",
            FaultKind::NotifierHangs => "notifier-hangs",
            FaultKind::KillWebhookReplica => "kill-webhook-replica",
        }
    }

    /// How long the fault lasts: the outage, or how long a stuck start or a failing
    /// endpoint is held. Kills are instantaneous (the supervisor restarts the process).
    fn duration_range(self) -> (Duration, Duration) {
        let s = Duration::from_secs;
        match self {
            FaultKind::ApiserverDown => (s(5), s(30)),
            FaultKind::EtcdRestart => (s(3), s(15)),
            FaultKind::StuckStart => (s(10), s(60)),
            FaultKind::NotifierErrors | FaultKind::NotifierHangs => (s(10), s(90)),
            FaultKind::KillLeader
            | FaultKind::TerminateReplica
            | FaultKind::VmiFailed
            | FaultKind::KillWebhookReplica => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Faults that take the control plane away: nothing else is injected while one runs,
    /// so each outage is one cause and its effects can be tied to it.
    pub fn is_outage(self) -> bool {
        matches!(self, FaultKind::ApiserverDown | FaultKind::EtcdRestart)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One planned fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// From the start of the workload.
    pub at: Duration,
    pub kind: FaultKind,
    pub lasts: Duration,
}

/// The schedule for a run of `length`: faults from `warmup` on, one every `mean_gap` on
/// average, every kind at least once (the first round is a shuffled list of all kinds,
/// then kinds drawn at random), outages never overlapping another fault, and the last
/// fault over `cooldown` before the end so the checker sees everything settle.
pub fn plan(seed: u64, length: Duration, warmup: Duration, cooldown: Duration) -> Vec<Planned> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let window = length.saturating_sub(warmup + cooldown);
    let mut kinds: Vec<FaultKind> = FaultKind::ALL.to_vec();
    rng.shuffle(&mut kinds);
    // At least every kind once; a longer run gets one fault every ~60 s on average.
    let count = kinds.len().max((window.as_secs() / 60) as usize);
    while kinds.len() < count {
        kinds.push(FaultKind::ALL[rng.usize(..FaultKind::ALL.len())]);
    }
    let slot = window / count as u32;
    let mut out = Vec::with_capacity(count);
    for (i, kind) in kinds.into_iter().enumerate() {
        let (lo, hi) = kind.duration_range();
        let mut lasts = lo + mul(hi.saturating_sub(lo), rng.f64());
        // A fault never outlives its slot, so faults follow each other and outages stand
        // alone; the jitter keeps the start inside the slot's first half.
        lasts = lasts.min(slot.mul_f64(0.5));
        let at = warmup + slot * i as u32 + mul(slot.mul_f64(0.4), rng.f64());
        out.push(Planned { at, kind, lasts });
    }
    out
}

fn mul(d: Duration, f: f64) -> Duration {
    d.mul_f64(f.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = plan(7, 4 * MIN, MIN / 2, MIN / 2);
        assert_eq!(a, plan(7, 4 * MIN, MIN / 2, MIN / 2));
        assert_ne!(a, plan(8, 4 * MIN, MIN / 2, MIN / 2));
    }

    #[test]
    fn every_kind_is_injected_at_least_once_even_in_a_short_run() {
        let p = plan(1, 4 * MIN, MIN / 2, MIN / 2);
        for kind in FaultKind::ALL {
            assert!(p.iter().any(|f| f.kind == kind), "{kind} missing: {p:?}");
        }
    }

    #[test]
    fn faults_stay_inside_the_window_and_never_overlap() {
        for seed in 0..50 {
            let (len, warm, cool) = (60 * MIN, MIN, 2 * MIN);
            let p = plan(seed, len, warm, cool);
            assert!(p.len() >= 50, "one every ~60 s: {}", p.len());
            for pair in p.windows(2) {
                assert!(pair[0].at + pair[0].lasts <= pair[1].at, "{pair:?}");
            }
            let last = p.last().unwrap();
            assert!(p[0].at >= warm);
            assert!(last.at + last.lasts <= len - cool, "{last:?}");
        }
    }

    #[test]
    fn outages_last_what_the_issue_asks_when_there_is_room() {
        let p = plan(3, 60 * MIN, MIN, MIN);
        let down: Vec<_> = p
            .iter()
            .filter(|f| f.kind == FaultKind::ApiserverDown)
            .collect();
        assert!(!down.is_empty());
        for f in down {
            assert!(f.lasts >= Duration::from_secs(5) && f.lasts <= Duration::from_secs(30));
        }
    }
}
