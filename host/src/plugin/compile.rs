//! Compiling plugins in a child process.
//!
//! Compiling a component takes time and memory that grow with its size, and
//! a plugin file is someone else's. A compile in a thread of the host cannot
//! be stopped: abandoning it leaves its thread running and its memory
//! allocated (six swaps of a component with 60,000 functions once left a
//! host at 2.5 GB). So each compile runs in a child process, this same
//! program run as `switchyard compile-plugin`, that bounds itself before it
//! reads the component: CPU time (RLIMIT_CPU), data memory (RLIMIT_DATA),
//! no core dump. The host waits for it, kills it when it is dropped (a
//! reload overtaken, shutdown) or overruns a wall-clock backstop, and gets
//! back the compiled code, or the reason it failed. When the child exits its
//! memory goes with it.
//!
//! The budget is CPU time, not wall-clock time: on a busy machine a compile
//! takes longer without costing more, and one slow plugin must not get an
//! unrelated one refused.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Codegen, EngineKind, LoadError, engine_config};

/// The hidden subcommand that runs a compile.
pub const SUBCOMMAND: &str = "compile-plugin";

/// Bytes of a failed compile's message kept.
const MAX_ERROR: usize = 4096;

/// What a compile may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU time, all of the compile's threads together.
    pub cpu: Duration,
    /// Data memory (heap and anonymous mappings), in MiB.
    pub memory_mib: u32,
}

/// Runs compiles as child processes of `program`.
#[derive(Debug, Clone)]
pub struct Compiler {
    program: PathBuf,
}

impl Compiler {
    /// Compiles with `program`, a build of this host (the `switchyard`
    /// binary, or a test's copy of it).
    pub fn at(program: impl Into<PathBuf>) -> Self {
        Compiler {
            program: program.into(),
        }
    }

    /// Compiles with the running program, which must be a build of the
    /// host's command line (or call [`serve_if_asked`] first thing). It is
    /// run through `/proc/self/exe`, which is the image running even after
    /// the file was replaced by an upgrade: the compiled code must match the
    /// engine of this process.
    pub fn this_program() -> std::io::Result<Self> {
        let exe = PathBuf::from("/proc/self/exe");
        if exe.exists() {
            Ok(Compiler::at(exe))
        } else {
            Ok(Compiler::at(std::env::current_exe()?))
        }
    }

    /// Compiles `wasm` with `codegen` into code for an engine configured
    /// like the host's. Cancelling the returned future kills the compile.
    /// With `functions`, a Cranelift child keeps the functions it compiles
    /// there and takes those it has compiled before (see `functions.rs`).
    pub async fn compile(
        &self,
        wasm: &[u8],
        limits: CompileLimits,
        functions: Option<&Path>,
        codegen: Codegen,
    ) -> Result<Vec<u8>, LoadError> {
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&self.program);
        command
            .arg(SUBCOMMAND)
            .arg("--cpu-ms")
            .arg(limits.cpu.as_millis().to_string())
            .arg("--memory-mib")
            .arg(limits.memory_mib.to_string());
        if let Some(dir) = functions {
            command.arg("--functions").arg(dir);
        }
        if codegen == Codegen::Winch {
            command.arg("--winch");
        }
        let mut child = command
            .env_clear()
            .env("RUST_BACKTRACE", "0")
            // The child lives for one compile: memory it frees is better
            // kept for its next allocation than given back to the OS and
            // faulted in again (a Winch compile of a Python plugin took
            // 1.6 to 1.9 s instead of 1.15 to 1.4 s).
            .env("MIMALLOC_PURGE_DELAY", "-1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                LoadError::Compiler(format!(
                    "cannot start the compiler {}: {e}",
                    self.program.display()
                ))
            })?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        widen(&stdin);
        widen(&stdout);
        let mut stderr = child.stderr.take().expect("piped");
        let io = async {
            let write = async {
                // A child that dies early closes its end; its exit status
                // says why.
                let _ = stdin.write_all(wasm).await;
                drop(stdin);
            };
            // Compiled code is bounded by the child's memory limit.
            let max_code = u64::from(limits.memory_mib) * 1024 * 1024;
            // It is two to three times the component's size: room for it
            // at once, not grown by copies as it arrives.
            let room = wasm.len().saturating_mul(3);
            let mut code = Vec::with_capacity(room.min(usize::try_from(max_code).unwrap_or(room)));
            let mut message = Vec::new();
            let read = async {
                let _ = (&mut stdout).take(max_code).read_to_end(&mut code).await;
            };
            // The first bytes of the message are kept; the rest is read and
            // dropped, so a chatty child never blocks on a full pipe.
            let read_err = async {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = MAX_ERROR.saturating_sub(message.len());
                    message.extend_from_slice(&buf[..n.min(room)]);
                }
            };
            tokio::join!(write, read, read_err);
            let status = child.wait().await;
            (code, message, status)
        };
        // A backstop for a child that neither finishes nor uses CPU (its
        // CPU limit would stop one that computes).
        let backstop = limits.cpu * 4 + Duration::from_secs(10);
        let (code, message, status) = match tokio::time::timeout(backstop, io).await {
            Ok(done) => done,
            Err(_) => {
                return Err(LoadError::TooSlow(format!(
                    "compiling did not finish within {} (wall clock)",
                    humantime::format_duration(backstop)
                )));
            }
        };
        let status =
            status.map_err(|e| LoadError::Compiler(format!("waiting for the compiler: {e}")))?;
        let message = crate::text::bounded_lossy(&message, MAX_ERROR);
        let message = message.trim();
        if status.success() {
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                bytes = code.len(),
                "Plugin compiled."
            );
            return Ok(code);
        }
        let cpu = humantime::format_duration(limits.cpu);
        match status.signal() {
            Some(libc_signal::SIGXCPU) | Some(libc_signal::SIGKILL) => Err(LoadError::TooSlow(
                format!("compiling took more than {cpu} of CPU time (host.plugin_compile_timeout)"),
            )),
            // Rust aborts when an allocation fails, and the child's only
            // allocations that can fail are under its RLIMIT_DATA.
            Some(libc_signal::SIGABRT) => Err(LoadError::TooLarge(format!(
                "compiling needed more than {} MiB of memory (host.plugin_compile_memory_mib)",
                limits.memory_mib
            ))),
            Some(signal) => Err(LoadError::Compiler(format!(
                "the compiler died (signal {signal}){}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ))),
            None if status.code() == Some(INVALID) => {
                Err(LoadError::NotAComponent(message.to_owned()))
            }
            None => Err(LoadError::Compiler(format!(
                "the compiler failed ({status}){}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ))),
        }
    }
}

/// Makes a pipe to the child 1 MiB large, the most a process may ask for
/// without privileges (`/proc/sys/fs/pipe-max-size`). Compiled code is tens
/// of MB, and through the default 64 KiB every chunk woke both processes:
/// the 45 MB of a Python plugin took 110 to 240 ms to read. A failure leaves
/// the pipe as it was.
#[expect(
    unsafe_code,
    reason = "fcntl(F_SETPIPE_SZ) on a pipe this process owns takes integers only"
)]
fn widen(pipe: &impl std::os::fd::AsRawFd) {
    // SAFETY: the descriptor is a pipe the child handle owns, open for the
    // call; F_SETPIPE_SZ reads or writes no memory of this process.
    let _ = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

/// Signal numbers the compiler's exit may carry (Linux).
mod libc_signal {
    pub const SIGABRT: i32 = 6;
    pub const SIGKILL: i32 = 9;
    pub const SIGXCPU: i32 = 24;
}

/// The child's exit code for a file that is not a valid component.
const INVALID: i32 = 3;

/// If this process was started as a compiler child
/// (`<program> compile-plugin --cpu-ms N --memory-mib M`), compiles and
/// returns the exit code; else `None`. A program that embeds the host and
/// compiles with itself ([`Compiler::this_program`]) calls this first thing
/// in `main`.
pub fn serve_if_asked() -> Option<ExitCode> {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.first().map(String::as_str) != Some(SUBCOMMAND) {
        return None;
    }
    let value = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1)?.parse().ok()
    };
    let (Some(cpu_ms), Some(memory_mib)) = (value("--cpu-ms"), value("--memory-mib")) else {
        eprintln!(
            "usage: {SUBCOMMAND} --cpu-ms N --memory-mib M [--functions DIR] [--winch] < component > compiled"
        );
        return Some(ExitCode::FAILURE);
    };
    // A path as the OS gave it: the cache folder need not be UTF-8.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let functions = raw
        .iter()
        .position(|a| a == "--functions")
        .and_then(|i| raw.get(i + 1))
        .map(PathBuf::from);
    let codegen = if args.iter().any(|a| a == "--winch") {
        Codegen::Winch
    } else {
        Codegen::Cranelift
    };
    Some(child_main(
        Duration::from_millis(cpu_ms),
        u32::try_from(memory_mib).unwrap_or(u32::MAX),
        functions.as_deref(),
        codegen,
    ))
}

/// The child's side: bounds itself, reads a component on stdin, writes the
/// compiled code on stdout. Run by `switchyard compile-plugin`.
pub fn child_main(
    cpu: Duration,
    memory_mib: u32,
    functions: Option<&Path>,
    codegen: Codegen,
) -> ExitCode {
    if let Err(e) = limit_self(cpu, memory_mib) {
        eprintln!("cannot limit the compile: {e}");
        return ExitCode::FAILURE;
    }
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("cannot read the component: {e}");
        return ExitCode::FAILURE;
    }
    let mut config = engine_config(EngineKind::Compile, codegen);
    // Winch compiles without the function cache (wasmtime does not offer
    // it there).
    if let Some(dir) = functions.filter(|_| codegen == Codegen::Cranelift) {
        let cache = super::functions::FunctionCache::new(dir);
        cache.sweep();
        if let Err(e) = config.enable_incremental_compilation(std::sync::Arc::new(cache)) {
            eprintln!("cannot use the function cache: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    let engine = match wasmtime::Engine::new(&config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("cannot create the engine: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match engine.precompile_component(&wasm) {
        Ok(code) => match std::io::stdout().lock().write_all(&code) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cannot write the compiled code: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::from(INVALID as u8)
        }
    }
}

fn limit_self(cpu: Duration, memory_mib: u32) -> std::io::Result<()> {
    use rlimit::Resource;
    // The soft CPU limit sends SIGXCPU; the hard one, a second later, SIGKILL.
    let secs = cpu.as_secs_f64().ceil().max(1.0) as u64;
    Resource::CPU.set(secs, secs + 1)?;
    let bytes = u64::from(memory_mib) * 1024 * 1024;
    Resource::DATA.set(bytes, bytes)?;
    Resource::CORE.set(0, 0)?;
    no_huge_pages();
    Ok(())
}

/// Has the kernel back this process's memory with small pages only. A
/// compile allocates a few hundred MB in many steps; faulted in as huge
/// pages, several times that was zeroed (a third of a Winch compile's time,
/// and its spread from run to run: 1.35 to 2.16 s for a Python plugin,
/// against 1.43 to 1.67 s without). A failure leaves the kernel's default.
#[expect(
    unsafe_code,
    reason = "prctl(PR_SET_THP_DISABLE) takes integers only and changes nothing Rust relies on"
)]
fn no_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes four integer arguments and reads or
    // writes no memory of this process.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
