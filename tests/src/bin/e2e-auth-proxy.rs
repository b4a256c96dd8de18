//! The `auth-proxy` sidecar, as its own binary does.
fn main() -> std::process::ExitCode {
    auth_proxy::cli::main_from(std::env::args_os())
}
