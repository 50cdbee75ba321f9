//! The `switchyard` binary: everything is in the library.

fn main() -> std::process::ExitCode {
    switchyard::cli::main()
}
