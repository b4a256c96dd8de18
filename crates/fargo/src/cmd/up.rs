//! `fargo up`: the assembly on this machine, no Docker, no AWS.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Task definition to run.
    #[arg(long, default_value = "taskdefs/assembly.json")]
    pub taskdef: PathBuf,
}

pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("{}: `fargo up` is not built yet", args.taskdef.display())
}
