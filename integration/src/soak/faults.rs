//! Carrying out the fault schedule against the control plane, the replicas, the simulator
//! and the platform's endpoint, and recording each fault's window in the history.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::checker::Checker;
use super::history::FaultWindow;
use super::replicas::Replicas;
use super::schedule::{FaultKind, Planned};
use super::workload::Workload;
use crate::controlplane::{ControlPlane, Options};
use crate::desks::now_ms;
use crate::kubevirt::{SimulatorHandle, StartFault};
use crate::recorder::{Recorder, Reply};

/// What the control plane's keeper thread can be asked to do.
enum Command {
    StopApiserver,
    StartApiserver,
    StopEtcd,
    StartEtcd,
}

/// The soak's own control plane, owned by a thread that lives as long as the soak (its
/// processes die with the thread that started them), stopped and started on request.
pub struct ControlPlaneKeeper {
    commands: mpsc::Sender<(Command, mpsc::Sender<Result<(), String>>)>,
}

impl ControlPlaneKeeper {
    pub fn start() -> Result<(Self, crate::cluster::Cluster), String> {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<Result<(), String>>)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("soak-controlplane".into())
            .spawn(move || {
                let mut cp = match ControlPlane::start(&Options::default()) {
                    Ok(cp) => cp,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(crate::cluster::Cluster::of(&cp)));
                // Ends (and stops the control plane) when the soak drops its keeper.
                while let Ok((command, reply)) = rx.recv() {
                    let result = match command {
                        Command::StopApiserver => {
                            cp.stop_apiserver();
                            Ok(())
                        }
                        Command::StartApiserver => cp.start_apiserver(),
                        Command::StopEtcd => {
                            cp.stop_etcd();
                            Ok(())
                        }
                        Command::StartEtcd => cp.start_etcd(),
                    };
                    let _ = reply.send(result.map_err(|e| e.to_string()));
                }
            })
            .map_err(|e| format!("control plane thread: {e}"))?;
        let cluster = ready_rx
            .recv()
            .map_err(|e| format!("control plane thread died: {e}"))??;
        Ok((Self { commands: tx }, cluster))
    }

    async fn ask(&self, command: Command) -> Result<(), String> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send((command, tx))
            .map_err(|_| "the control plane thread is gone".to_string())?;
        tokio::task::spawn_blocking(move || rx.recv())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|_| "the control plane thread is gone".to_string())?
    }
}

/// Everything a fault acts on.
pub struct Targets<'a> {
    pub controlplane: &'a ControlPlaneKeeper,
    pub replicas: &'a Replicas,
    pub simulator: &'a SimulatorHandle,
    pub gateway: &'a Recorder,
    pub workload: &'a Workload,
    pub checker: &'a Checker,
}

/// Runs the schedule from `start`; returns the faults that could not be carried out.
pub async fn inject(plan: Vec<Planned>, start: Instant, t: Targets<'_>) -> Vec<String> {
    let mut failed = Vec::new();
    let mut rng = fastrand::Rng::with_seed(plan.len() as u64);
    for fault in plan {
        tokio::time::sleep_until((start + fault.at).into()).await;
        if t.workload.stop.load(Ordering::Relaxed) {
            break;
        }
        eprintln!(
            "soak: +{:>4}s fault {} for {:?}",
            fault.at.as_secs(),
            fault.kind,
            fault.lasts
        );
        // Recorded as under way before it starts: what it causes meanwhile is excused.
        let index = {
            let mut h = t.checker.history();
            h.faults.push(FaultWindow {
                kind: fault.kind.name(),
                from: now_ms(),
                to: i64::MAX,
            });
            h.faults.len() - 1
        };
        let result = one(&fault, &t, &mut rng).await;
        t.checker.history().faults[index].to = now_ms();
        if let Err(e) = result {
            eprintln!("soak: fault {} not carried out: {e}", fault.kind);
            failed.push(format!("{}: {e}", fault.kind));
        }
    }
    failed
}

async fn one(f: &Planned, t: &Targets<'_>, rng: &mut fastrand::Rng) -> Result<(), String> {
    match f.kind {
        FaultKind::KillLeader => {
            let leader = wait_for(|| t.replicas.leader()).await?;
            kill(t.replicas, leader, libc::SIGKILL)
        }
        FaultKind::TerminateReplica => {
            let running = wait_for(|| Some(t.replicas.running()).filter(|r| !r.is_empty())).await?;
            kill(
                t.replicas,
                running[rng.usize(..running.len())],
                libc::SIGTERM,
            )
        }
        FaultKind::KillWebhookReplica => {
            let serving = wait_for(|| t.replicas.serving()).await?;
            kill(t.replicas, serving, libc::SIGKILL)
        }
        FaultKind::ApiserverDown => {
            t.controlplane.ask(Command::StopApiserver).await?;
            tokio::time::sleep(f.lasts).await;
            t.controlplane.ask(Command::StartApiserver).await
        }
        FaultKind::EtcdRestart => {
            t.controlplane.ask(Command::StopEtcd).await?;
            tokio::time::sleep(f.lasts).await;
            t.controlplane.ask(Command::StartEtcd).await
        }
        FaultKind::StuckStart => {
            // The next desks' VMIs (named after their desks) cannot start for a while.
            let next = t.workload.next.load(Ordering::Relaxed);
            let fault = if rng.bool() {
                StartFault::ErrImagePull
            } else {
                StartFault::Unschedulable
            };
            let names: Vec<String> = (next..next + 3)
                .map(|n| format!("cyberdesk-soak-{n:06}"))
                .collect();
            for name in &names {
                t.simulator.hold_start(&t.workload.namespace, name, fault);
            }
            tokio::time::sleep(f.lasts).await;
            for name in &names {
                t.simulator.release_start(&t.workload.namespace, name);
            }
            Ok(())
        }
        FaultKind::VmiFailed => {
            let running: Vec<String> = {
                let h = t.checker.history();
                h.vms
                    .values()
                    .filter(|v| {
                        v.gone.is_none() && !v.halted && !v.pool_owned && !v.desks.is_empty()
                    })
                    .map(|v| v.name.clone())
                    .collect()
            };
            if running.is_empty() {
                return Err("no running VM".into());
            }
            let name = &running[rng.usize(..running.len())];
            t.simulator
                .set_vmi_phase(&t.workload.namespace, name, "Failed")
                .await
                .map_err(|e| e.to_string())
        }
        FaultKind::NotifierErrors | FaultKind::NotifierHangs => {
            let reply = if f.kind == FaultKind::NotifierErrors {
                Reply::Codes(vec![500])
            } else {
                Reply::Never
            };
            t.gateway.script_all(Some(reply));
            tokio::time::sleep(f.lasts).await;
            t.gateway.script_all(None);
            Ok(())
        }
    }
}

/// A fault that needs a target (a leader, a running replica) waits up to 30 s for one:
/// the previous fault's restart may still be under way.
async fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> Result<T, String> {
    for _ in 0..60 {
        if let Some(v) = f() {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("no target within 30 s".into())
}

fn kill(replicas: &Replicas, i: usize, sig: libc::c_int) -> Result<(), String> {
    if replicas.signal(i, sig) {
        Ok(())
    } else {
        Err(format!("replica {i} is not running"))
    }
}

/// How long to give the cluster after the last fault before the final verdict.
pub const SETTLE: Duration = Duration::from_secs(60);
