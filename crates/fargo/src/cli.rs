//! Argument parsing and dispatch. Subcommands that need async run on one tokio runtime;
//! `sidecar` hands the process to a sidecar's own entry point before any runtime exists.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fargo",
    version,
    about = "Run, call and deploy the fargo Sidecar-Assembly"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start the whole assembly on this machine, as taskdefs/assembly.json describes it.
    Up(crate::cmd::up::UpArgs),
    /// Render docker-compose.yml from the task definitions (or --check it).
    Compose(crate::cmd::compose::ComposeArgs),
    /// Fill the placeholders of a task, service or scaling definition and print it.
    Render(crate::cmd::render::RenderArgs),
    /// Check definitions offline: the ECS API model and the Fargate rules.
    Lint(crate::cmd::lint::LintArgs),
    /// Show what deploy would change in the registered task definition and the service.
    Diff(crate::cmd::diff::DiffArgs),
    /// Register the task definition, roll out the service, apply scaling, wait, roll back on failure.
    Deploy(crate::cmd::deploy::DeployArgs),
    /// Run a one-off task (the thumbnail job) and exit with its container's exit code.
    RunTask(crate::cmd::run_task::RunTaskArgs),
    /// The service's deployments, counts, tasks and recent events.
    Status(crate::cmd::status::StatusArgs),
    /// Count the coins of a picture with the running app's coin-value service.
    Count(crate::cmd::count::CountArgs),
    /// Load-test one RPC of the app: N clients, req/s, p50/p90/p99/max, errors by code.
    Load(crate::cmd::load::LoadArgs),
    /// Thumbnail(s) of a video from the running app: `fargo thumb VIDEO --at 12.5 -o OUT.png`.
    Thumb(crate::cmd::thumb::ThumbArgs),
    /// Launch one thumbnail job per new video in a folder or S3 prefix (local, docker or ecs).
    Watch(crate::cmd::watch::WatchArgs),
    /// Run one sidecar in this process: `fargo sidecar thumbnail serve`.
    #[command(hide = true)]
    Sidecar {
        /// thumbnail, coin-value, logging or auth-proxy
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

pub fn main() -> ExitCode {
    let cli = match fargo_runtime::cli::parse::<Cli, _, _>(std::env::args_os()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Sidecar { name, args } => sidecar(&name, args),
        cmd => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("fargo: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(run(cmd)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("fargo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    match cmd {
        Cmd::Up(args) => crate::cmd::up::run(args).await,
        Cmd::Compose(args) => crate::cmd::compose::run(args).await,
        Cmd::Render(args) => crate::cmd::render::run(args),
        Cmd::Lint(args) => crate::cmd::lint::run(args),
        Cmd::Diff(args) => crate::cmd::diff::run(args).await,
        Cmd::Deploy(args) => crate::cmd::deploy::run(args).await,
        Cmd::RunTask(args) => crate::cmd::run_task::run(args).await,
        Cmd::Status(args) => crate::cmd::status::run(args).await,
        Cmd::Count(args) => crate::cmd::count::run(args).await,
        Cmd::Load(args) => crate::cmd::load::run(args).await,
        Cmd::Thumb(args) => crate::cmd::thumb::run(args).await,
        Cmd::Watch(args) => crate::cmd::watch::run(args).await,
        // Dispatched in `main` before any runtime exists.
        Cmd::Sidecar { .. } => Ok(ExitCode::from(2)),
    }
}

/// The sidecars `fargo sidecar` can run, by task-definition container name.
pub const SIDECARS: [&str; 4] = ["logging", "thumbnail", "coin-value", "auth-proxy"];

fn sidecar(name: &str, args: Vec<OsString>) -> ExitCode {
    let argv = std::iter::once(OsString::from(name)).chain(args);
    match name {
        "thumbnail" => thumbnail::cli::main_from(argv),
        "coin-value" => coin_value::cli::main_from(argv),
        "logging" => logging::cli::main_from(argv),
        "auth-proxy" => auth_proxy::cli::main_from(argv),
        other => {
            eprintln!(
                "fargo sidecar: unknown sidecar `{other}` (one of {})",
                SIDECARS.join(", ")
            );
            ExitCode::from(2)
        }
    }
}
