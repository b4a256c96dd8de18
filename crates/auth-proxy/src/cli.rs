//! `auth-proxy serve | healthcheck`.

use std::ffi::OsString;
use std::process::ExitCode;

use fargo_runtime::cli::{self, Common};

#[derive(Debug, clap::Parser)]
#[command(
    name = "auth-proxy",
    version,
    about = "Authenticating gRPC proxy in front of the assembly"
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

/// Entry point of the `auth-proxy` binary (and of `fargo sidecar auth-proxy`).
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
        // Serving keeps the file's path, for reload on SIGHUP and on change.
        Cmd::Common(Common::Serve(args)) => match args.load::<crate::Config>() {
            Ok(config) => {
                let file = args.config.clone();
                cli::run_server(config, move |l, cfg, s| async move {
                    match file {
                        Some(f) => crate::serve_with_reload(l, cfg, f, s.wait()).await,
                        None => crate::serve(l, cfg, s.wait()).await,
                    }
                })
            }
            Err(e) => cli::config_failure("auth-proxy", &e),
        },
        Cmd::Common(c) => {
            cli::run_common::<crate::Config, _, _, _>(c, |l, cfg, s| crate::serve(l, cfg, s.wait()))
        }
    }
}
