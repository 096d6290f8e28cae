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
    /// Write a local CA and webhook serving certificate (ca.crt, ca.key, tls.crt, tls.key).
    Certs(CertsArgs),
    /// Print both webhook configurations as YAML (for GitOps or a local control plane).
    WebhookConfig(WebhookConfigArgs),
    /// Show what the operator will do with the desks and VMs the previous (kopf) operator
    /// left: adopt, create, keep or leave alone. Reads only; needs --dry-run.
    Migrate(cyberdesk_operator::migrate::MigrateConfig),
    /// Lint JSON Schema policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct CertsArgs {
    /// Output directory.
    #[arg(long, default_value = "webhook-certs")]
    out: std::path::PathBuf,
    /// DNS names or IPs the serving certificate covers (repeat or comma-separate).
    #[arg(long = "san", value_delimiter = ',', default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
    sans: Vec<String>,
}

#[derive(clap::Args)]
struct WebhookConfigArgs {
    /// Reach the webhooks at this base URL (e.g. https://127.0.0.1:8443) instead of the Service.
    #[arg(long)]
    url: Option<String>,
    /// Service name (ignored with --url).
    #[arg(long, default_value = cyberdesk_operator::model::names::SERVICE_NAME)]
    service_name: String,
    /// The operator's namespace: the Service's namespace.
    #[arg(long, default_value = cyberdesk_operator::model::names::DEFAULT_NAMESPACE)]
    namespace: String,
    /// PEM file whose contents become the caBundle (omit for cert-manager CA injection).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check that each file is a valid policy whose schema compiles; exit 1 otherwise.
    Check {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
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
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(cyberdesk_operator::wiring::run(*cfg))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            print!("{}", cyberdesk_operator::crd::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => {
            let written = cyberdesk_operator::certs::write_local_certs(&args.out, &args.sans)?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::WebhookConfig(args) => {
            use cyberdesk_operator::certs::webhook_config::{
                WebhookConfigParams, WebhookTarget, render_yaml,
            };
            let target = match args.url {
                Some(url) => WebhookTarget::Url(url),
                None => WebhookTarget::Service {
                    name: args.service_name,
                    namespace: args.namespace,
                    port: 443,
                },
            };
            let ca = match &args.ca_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
                ),
                None => None,
            };
            let params = WebhookConfigParams {
                target,
                timeout_seconds: 5,
            };
            print!("{}", render_yaml(&params, ca.as_deref())?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command: PolicyCommand::Check { files },
        } => match cyberdesk_operator::policy::files::check_files(&files) {
            Ok(lines) => {
                for line in lines {
                    println!("{line}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in errors {
                    eprintln!("error: {e}");
                }
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Migrate(cfg) => {
            if let Some(problem) = cfg.problem() {
                anyhow::bail!("{problem}");
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let text = runtime.block_on(async {
                let client = kube::Client::try_default().await?;
                cyberdesk_operator::migrate::dry_run(client, &cfg).await
            })?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("cyberdesk-operator {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
