//! The `cyberdesk-operator` binary: a thin CLI over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cyberdesk_operator::config::RunConfig;

#[derive(Parser)]
#[command(
    name = "cyberdesk-operator",
    version,
    about = "Kubernetes operator that turns Cyberdesk resources into KubeVirt VirtualMachines",
    long_about = "Kubernetes operator that turns Cyberdesk resources into KubeVirt VirtualMachines.\n\n\
                  Without a subcommand it runs the operator (`run`). Every `run` flag can also be \
                  set through the environment variable shown in its help; a .env file in the \
                  working directory is read when present (local development only)."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook server, the admin server and (on the leader) the reconciler.
    Run(Box<RunConfig>),
    /// Print the Cyberdesk CustomResourceDefinition as YAML.
    Crd,
    /// Generate a local CA and webhook serving certificate (arrives with the webhook work).
    Certs,
    /// Render both webhook configurations (arrives with the webhook work).
    WebhookConfig,
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    // Only for local runs: in a cluster configuration comes from the environment.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Run(Box::new(RunConfig::parse_default())));
    match execute(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run(cfg) => {
            cyberdesk_operator::telemetry::init(cfg.log_format);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(cyberdesk_operator::runtime::run(*cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", cyberdesk_operator::crd::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs | Command::WebhookConfig => {
            eprintln!("not implemented yet: this subcommand arrives with the admission webhook work");
            Ok(ExitCode::from(2))
        }
        Command::Version => {
            println!("cyberdesk-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
