//! `thumbnail serve | healthcheck | job`.

use std::ffi::OsString;
use std::process::ExitCode;

use fargo_runtime::cli::{self, Common};

#[derive(Debug, clap::Parser)]
#[command(
    name = "thumbnail",
    version,
    about = "Video thumbnails with the FFmpeg libraries"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    #[command(flatten)]
    Common(Common),
    /// Run once: extract the thumbnail(s) of one video, write them, exit (0 on success).
    Job(crate::job::JobArgs),
}

/// Entry point of the `thumbnail` binary (and of `fargo sidecar thumbnail`).
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli: Cli = match cli::parse(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match cli.cmd {
        Cmd::Job(args) => crate::job::run(args),
        Cmd::Common(c) => {
            cli::run_common::<crate::Config, _, _, _>(c, |l, cfg, s| crate::serve(l, cfg, s.wait()))
        }
    }
}
