fn main() -> std::process::ExitCode {
    thumbnail::cli::main_from(std::env::args_os())
}
