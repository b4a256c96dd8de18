//! The `coin-value` sidecar, as its own binary does.
fn main() -> std::process::ExitCode {
    coin_value::cli::main_from(std::env::args_os())
}
