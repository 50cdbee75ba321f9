//! Plugin projects made by `switchyard new`, and the tools that build and
//! test them (cargo, componentize-py, node), run as an author would.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{host_binary, repo_root, tempdir};

/// Runs `program args` in `dir` with the test's `switchyard` and tools on
/// the path; panics with its output unless it succeeds.
pub fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let tools = repo_root().join("target/tools/python/bin");
    let bin = host_binary();
    let path = format!(
        "{}:{}:{}",
        bin.parent().unwrap().display(),
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env("SWITCHYARD", &bin)
        .env_remove("RUST_LOG")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} in {}: {}\n{text}",
        dir.display(),
        out.status
    );
    text
}

/// `switchyard new <name> --lang <lang>` in a fresh folder; the project.
pub fn new_project(name: &str, lang: &str) -> PathBuf {
    let parent = tempdir(&format!("templates-{lang}"));
    let _ = std::fs::remove_dir_all(parent.join(name));
    let out = Command::new(host_binary())
        .args(["new", name, "--lang", lang])
        .current_dir(&parent)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(&format!("made {name}")), "{said}");
    parent.join(name)
}

/// Builds the Python project's `app.py` into the component `out` with
/// componentize-py, against the project's `wit/`.
pub fn componentize_py(project: &Path, out: &str) -> String {
    run(
        project,
        "componentize-py",
        &[
            "-d",
            "wit",
            "-w",
            "plugin",
            "componentize",
            "app",
            "-o",
            out,
        ],
    )
}
