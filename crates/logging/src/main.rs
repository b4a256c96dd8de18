fn main() -> std::process::ExitCode {
    logging::cli::main_from(std::env::args_os())
}
