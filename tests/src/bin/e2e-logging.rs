//! The `logging` sidecar, as its own binary does.
fn main() -> std::process::ExitCode {
    logging::cli::main_from(std::env::args_os())
}
