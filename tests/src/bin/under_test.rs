//! The `switchyard` binary, built with the `failpoints` feature, for tests
//! that run the host as a process of its own and kill it.

fn main() -> std::process::ExitCode {
    switchyard_tests::switchyard::cli::main()
}
