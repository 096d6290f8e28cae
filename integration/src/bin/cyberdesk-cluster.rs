//! `make cluster`: a local kube-apiserver + etcd in the foreground until Ctrl-C.

use std::time::{Duration, Instant};

use clap::Parser;
use cyberdesk_integration::controlplane::{ControlPlane, Options, default_bin_dir};

#[derive(Parser, Debug)]
#[command(about = "Run a local kube-apiserver + etcd (built by `make controlplane`) until Ctrl-C")]
struct Args {
    /// Directory holding kube-apiserver, etcd and kubectl.
    #[arg(long, env = "CYBERDESK_CONTROLPLANE_BIN", default_value_os_t = default_bin_dir())]
    bin_dir: std::path::PathBuf,
    /// kube-apiserver port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    port: Option<u16>,
    /// Also copy the kubeconfig to this path.
    #[arg(long)]
    kubeconfig_out: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Options {
        bin_dir: args.bin_dir,
        apiserver_port: args.port,
        ..Options::default()
    };
    let started = Instant::now();
    let cp = ControlPlane::start(&opts)?;
    let (api_pid, etcd_pid) = cp.pids();
    let kubeconfig = match args.kubeconfig_out {
        Some(path) => {
            std::fs::copy(cp.kubeconfig_path(), &path)?;
            path
        }
        None => cp.kubeconfig_path().to_path_buf(),
    };
    println!(
        "control plane ready in {:.1}s at {}",
        started.elapsed().as_secs_f64(),
        cp.apiserver_url()
    );
    println!("pids: kube-apiserver={api_pid} etcd={etcd_pid}");
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!(
        "operator kubeconfig (its ServiceAccount, no RBAC until manifests/base/rbac.yaml is applied): {}",
        cp.operator_kubeconfig_path().display()
    );
    println!("kubectl: {}", cp.kubectl_path().display());
    println!("press Ctrl-C to stop");
    wait_for_signal();
    println!("stopping");
    drop(cp);
    Ok(())
}

fn wait_for_signal() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    extern "C" fn on_signal(_: libc::c_int) {
        STOP.store(true, Ordering::SeqCst);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}
