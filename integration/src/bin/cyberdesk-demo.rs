//! `make demo`: a local control plane, KubeVirt's CRDs with the simulator playing
//! virt-controller, the operator (as its ServiceAccount under the shipped RBAC, webhooks
//! registered over TLS, leader election on) and examples/cyberdesk.yaml (with `--pool`: the
//! warm pool of examples/pool.yaml, then a desk from it), watched with
//! `kubectl get cyberdesks -w` until Ctrl-C.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use cyberdesk_integration::cluster::{Cluster, install_everything};
use cyberdesk_integration::controlplane::{ControlPlane, Options};
use cyberdesk_integration::kubevirt::{Simulator, SimulatorOptions};
use cyberdesk_integration::operator::OperatorProcess;
use cyberdesk_integration::wait::until;
use cyberdesk_integration::workspace::repo_path;

/// How long `--until-timed-out` waits for the sample desk (30 s timeout) to time out.
const UNTIL_TIMED_OUT_DEADLINE: Duration = Duration::from_secs(180);

#[derive(Parser)]
#[command(about = "Run the operator against a local control plane with a sample Cyberdesk")]
struct Args {
    /// Exit once the sample desk has timed out (for smoke tests) instead of waiting for Ctrl-C.
    #[arg(long)]
    until_timed_out: bool,
    /// Delay between VMI phases in the simulator, in milliseconds (to watch them go by).
    #[arg(long, default_value_t = 1500)]
    phase_delay_ms: u64,
    /// Start from a warm pool: apply examples/pool.yaml, wait until its VMs are booted,
    /// then apply examples/pool-desk.yaml, whose desk claims one of them.
    #[arg(long)]
    pool: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    install_signal_flag(&stop);

    eprintln!("==> starting kube-apiserver + etcd");
    let cp = ControlPlane::start(&Options::default())?;
    let cluster = Cluster::of(&cp);
    let runtime = tokio::runtime::Runtime::new()?;
    let _sim = runtime.block_on(async {
        eprintln!("==> installing the Cyberdesk and KubeVirt CRDs");
        install_everything(&cluster).await;
        let opts = SimulatorOptions::default()
            .with_phase_delay(Duration::from_millis(args.phase_delay_ms));
        Simulator::start(cluster.client().await, opts)
    });

    eprintln!("==> starting cyberdesk-operator (webhooks over TLS, leader election)");
    let operator_args = vec![format!("--policy-dir={}", repo_path("policies").display())];
    let operator = OperatorProcess::start_serving_webhooks(&cluster, "demo", &operator_args);
    if !runtime.block_on(operator.wait_ready(Duration::from_secs(60))) {
        anyhow::bail!(
            "the operator did not become ready; its log:\n{}",
            operator.log()
        );
    }
    let kubectl = cluster.kubectl();
    // The apiserver picks up the webhook configuration a moment after it is written.
    let apply = |path: &str| -> anyhow::Result<()> {
        let example = std::fs::read_to_string(repo_path(path))?;
        let applied = runtime
            .block_on(until(Duration::from_secs(20), || {
                let out = kubectl.apply(&example, &[]);
                std::future::ready(out.ok().filter(|o| o.success).map(|o| o.stdout))
            }))
            .ok_or_else(|| anyhow::anyhow!("could not apply {path}"))?;
        eprint!("{applied}");
        Ok(())
    };
    if args.pool {
        apply("examples/pool.yaml")?;
        eprintln!("==> waiting for the pool's VMs to boot");
        let waited = kubectl.run(
            &[
                "wait",
                "--for=condition=Ready",
                "cyberdeskpool/warm",
                "-n",
                "desks",
                "--timeout=120s",
            ],
            None,
        )?;
        if !waited.success {
            anyhow::bail!("the pool did not fill: {}", waited.stderr);
        }
        let _ = kubectl
            .run(&["get", "cyberdeskpools", "-n", "desks"], None)
            .map(|out| eprint!("{}", out.stdout));
        apply("examples/pool-desk.yaml")?;
    } else {
        apply("examples/cyberdesk.yaml")?;
    }

    let kc = cluster.kubeconfig.display().to_string();
    let kubectl_path = cluster.kubectl.display().to_string();
    eprintln!("\n==> ready. In another terminal:");
    eprintln!("    export KUBECONFIG={kc}");
    eprintln!("    alias kubectl={kubectl_path}");
    eprintln!(
        "    kubectl get cyberdesks -A ; kubectl describe cd demo -n desks ; kubectl get vm,vmi -n desks"
    );
    eprintln!(
        "    operator log: {}",
        cluster.dir.join("operator-demo.log").display()
    );
    eprintln!("==> watching (Ctrl-C stops everything)\n");
    let mut watch = Command::new(&cluster.kubectl)
        .args(["get", "cyberdesks", "-n", "desks", "-w"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdin(Stdio::null())
        .spawn()?;

    // `--until-timed-out` is what tests run: a desk stuck short of TimedOut must fail them,
    // not hold CI until its own deadline. The sample desk times out 30 s after its VM.
    let deadline = std::time::Instant::now() + UNTIL_TIMED_OUT_DEADLINE;
    let mut outcome = Ok(());
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if args.until_timed_out && std::time::Instant::now() > deadline {
            outcome = Err(anyhow::anyhow!(
                "the demo desk did not reach TimedOut within {} s",
                UNTIL_TIMED_OUT_DEADLINE.as_secs()
            ));
            break;
        }
        if args.until_timed_out {
            let phase = kubectl.run(
                &[
                    "get",
                    "cd",
                    "demo",
                    "-n",
                    "desks",
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            )?;
            if phase.stdout.trim() == "TimedOut" {
                eprintln!("\n==> the demo desk timed out");
                if args.pool {
                    let source = kubectl.run(
                        &[
                            "get",
                            "cd",
                            "demo",
                            "-n",
                            "desks",
                            "-o",
                            "jsonpath={.status.source}",
                        ],
                        None,
                    )?;
                    eprintln!("==> the demo desk's VM came from: {}", source.stdout.trim());
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    eprintln!("==> stopping");
    drop(operator);
    drop(runtime);
    drop(cp);
    outcome
}

fn install_signal_flag(flag: &Arc<AtomicBool>) {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(flag.clone());
    extern "C" fn on_signal(_: libc::c_int) {
        if let Some(f) = FLAG.get() {
            f.store(true, Ordering::SeqCst);
        }
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
}
