fn main() -> std::process::ExitCode {
    fargo::cli::main()
}
