//! `slurmlab`: one binary for every role (controller, gateway) and the tools around them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "slurmlab",
    version,
    about = "Jupyter kernels on SLURM clusters, driven from Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (reconciles SlurmClusters, ComputeAllocations, JupyterSessions).
    Controller(slurmlab::controller::ControllerArgs),
    /// Run the MCP gateway for agents (stdio or Streamable HTTP).
    Gateway(slurmlab::gateway::GatewayArgs),
    /// Delete the sessions and allocations the controller manages and wait until their
    /// SLURM jobs are cancelled (the chart's pre-delete hook runs this).
    Uninstall(slurmlab::controller::uninstall::UninstallArgs),
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Write the generated reference docs (CRD fields, MCP tools) into a directory.
    Docs {
        /// Where to write `crds.md` and `mcp-tools.md`.
        #[arg(long, value_name = "DIR", default_value = "docs/reference")]
        output_dir: PathBuf,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller(args) => serve(|| async {
            slurmlab::controller::run(args)
                .await
                .map_err(|e| e.to_string())
        }),
        Command::Gateway(args) => serve(|| async {
            slurmlab::gateway::run(args)
                .await
                .map_err(|e| e.to_string())
        }),
        Command::Uninstall(args) => serve(|| async {
            slurmlab::controller::uninstall::run(args)
                .await
                .map_err(|e| e.to_string())
        }),
        Command::Crds { output_dir } => {
            slurmlab::cli::crds(output_dir.as_deref()).map_err(|e| e.to_string())
        }
        Command::Docs { output_dir } => {
            slurmlab::reference::pages()
                .into_iter()
                .try_for_each(|(name, text)| {
                    let path = output_dir.join(&name);
                    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))
                })
        }
        Command::Version => {
            println!("slurmlab {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slurmlab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up logging, TLS and the async runtime for a long-running role.
fn serve<F, Fut>(role: F) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    // Logs: JSON when SLURMLAB_LOG_FORMAT=json (in clusters), text otherwise; level from RUST_LOG.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_lease_manager=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SLURMLAB_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
    // One rustls crypto provider for the whole process (kube and reqwest share it).
    slurmlab::tls::ensure_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(role())
}
