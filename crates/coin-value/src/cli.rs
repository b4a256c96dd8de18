//! `coin-value serve | healthcheck`.

use std::ffi::OsString;
use std::process::ExitCode;

use fargo_runtime::cli::{self, Common};

#[derive(Debug, clap::Parser)]
#[command(
    name = "coin-value",
    version,
    about = "Coin values from a photo of US coins"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    #[command(flatten)]
    Common(Common),
}

/// Entry point of the `coin-value` binary (and of `fargo sidecar coin-value`).
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
        Cmd::Common(c) => {
            cli::run_common::<crate::Config, _, _, _>(c, |l, cfg, s| crate::serve(l, cfg, s.wait()))
        }
    }
}
