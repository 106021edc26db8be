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
    Controller,
    /// Run the MCP gateway for agents.
    Gateway,
    /// Print the CustomResourceDefinitions as YAML, or write one file per CRD.
    Crds {
        /// Write `<name>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        output_dir: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Controller => Err("the controller is not implemented yet".to_owned()),
        Command::Gateway => Err("the gateway is not implemented yet".to_owned()),
        Command::Crds { output_dir } => {
            slurmlab::cli::crds(output_dir.as_deref()).map_err(|e| e.to_string())
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
