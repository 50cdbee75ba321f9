//! The plugins the tests run: built from `plugins/` once per test binary,
//! versions of them with other content hashes, and a component slow to
//! compile.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::repo_root;

/// Where the built plugins are.
pub fn plugin_dir() -> PathBuf {
    repo_root().join("target/wasm32-wasip2/release")
}

/// Builds the plugins once per test binary (a no-op when they are up to
/// date) and returns the path of one.
pub fn plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet"])
            .current_dir(repo_root().join("plugins"))
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .expect("running cargo to build the plugins");
        assert!(status.success(), "building the plugins failed");
    });
    let path = plugin_dir().join(format!("{name}.wasm"));
    assert!(path.is_file(), "plugin {} was not built", path.display());
    path
}

/// Another version of a plugin: the same component with a custom section
/// appended, so it behaves the same and has another content hash.
pub fn plugin_version(base: &[u8], tag: u32) -> Vec<u8> {
    let name = b"switchyard-test-version";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(&tag.to_le_bytes());
    let mut out = base.to_vec();
    out.push(0); // custom section id
    out.push(section.len() as u8); // its size: < 128, one LEB128 byte
    out.extend_from_slice(&section);
    out
}

/// A valid component that is slow to compile: a core module of `functions`
/// functions, each a chain of arithmetic, and nothing exported. About 9 s of
/// CPU for 60,000 functions on this kind of machine.
pub fn slow_component(functions: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len(), out);
        out.extend_from_slice(payload);
    }
    // One function type, (i32) -> i32.
    let types = [1u8, 0x60, 1, 0x7f, 1, 0x7f];
    let mut funcs = Vec::new();
    leb(functions, &mut funcs);
    funcs.extend(std::iter::repeat_n(0u8, functions));
    // local.get 0, then (i32.const k; i32.add; i32.const 3; i32.mul) x 20.
    let mut body = vec![0u8, 0x20, 0];
    for k in 0..20u8 {
        body.extend_from_slice(&[0x41, k & 0x3f, 0x6a, 0x41, 3, 0x6c]);
    }
    body.push(0x0b);
    let mut code = Vec::new();
    leb(functions, &mut code);
    for _ in 0..functions {
        leb(body.len(), &mut code);
        code.extend_from_slice(&body);
    }
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &types, &mut module);
    section(3, &funcs, &mut module);
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component);
    component
}

/// The version name the host gives a plugin file: the first 16 hex digits
/// of its SHA-256.
pub fn version_hash(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(bytes);
    digest.iter().take(8).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
