//! The `switchyard` binary: the host is the `switchyard` library, the
//! command line `switchyard-cli`'s.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    switchyard_cli::main()
}
