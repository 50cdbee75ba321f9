//! The `switchyard` binary, built with the `failpoints` feature, for tests
//! that run the host as a process of its own and kill it.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard_cli::main()
}
