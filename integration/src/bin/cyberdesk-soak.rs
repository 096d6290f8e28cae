//! `make soak`: the chaos soak (see docs/reliability.md). Prints its report and exits 1 on
//! any invariant violation, unexplained log line or fault it could not inject.

use std::time::Duration;

use clap::Parser;
use cyberdesk_integration::soak::{self, Config};

/// The chaos soak: two replicas, a continuous workload and seeded faults, judged by an
/// independent checker.
#[derive(Parser, Debug)]
struct Args {
    /// How long the workload and the faults run, in minutes.
    #[arg(long, env = "SOAK_MINUTES", default_value_t = 60.0)]
    minutes: f64,
    /// Desks alive at a time.
    #[arg(long, env = "SOAK_DESKS", default_value_t = 1000)]
    desks: usize,
    /// Seed of the fault schedule and the workload (the report prints it).
    #[arg(long, env = "SOAK_SEED")]
    seed: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The KubeVirt simulator's logs, when asked for (RUST_LOG), on stderr.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let cfg = Config {
        length: Duration::from_secs_f64(args.minutes.max(1.0) * 60.0),
        desks: args.desks.max(1),
        seed,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime
        .block_on(soak::run(cfg))
        .map_err(|e| anyhow::anyhow!("the soak could not start: {e}"))?;
    println!("{report}");
    if !report.passed() {
        eprintln!("reproduce with: make soak SOAK_SEED={seed}");
        std::process::exit(1);
    }
    Ok(())
}
