//! Embeds what `switchyard new` writes into a plugin project: the templates,
//! the kits, the contract's WIT and the chat payloads' schema. Each file is
//! an `include_str!` of the repository's own copy, so the binary carries
//! exactly what the repository tests.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The folders embedded, relative to the repository, and where they are
/// named inside the binary.
const TREES: &[(&str, &str)] = &[
    ("templates", "templates"),
    ("kits", "kits"),
    ("schemas", "schemas"),
    ("wit/switchyard-plugin@0.2.0", "wit"),
    ("plugins/switchyard-plugin/src", "rust-kit/src"),
    ("plugins/chat-events/src", "chat-events/src"),
];

/// Single files.
const FILES: &[(&str, &str)] = &[
    (
        "plugins/switchyard-plugin/Cargo.toml",
        "rust-kit/Cargo.toml",
    ),
    ("plugins/chat-events/Cargo.toml", "chat-events/Cargo.toml"),
    // The versions the kits are built and tested with here: a new project
    // starts from them (cargo drops what it does not use).
    ("plugins/Cargo.lock", "rust-kit/Cargo.lock"),
];

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if matches!(name, "node_modules" | "__pycache__" | "target") || name.ends_with(".wasm") {
            continue;
        }
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut code = String::from(
        "/// (name, contents) of every embedded file.\npub static FILES: &[(&str, &str)] = &[\n",
    );
    let mut entry = |path: &Path, name: &str| {
        let path = path.canonicalize().expect("an embedded file");
        writeln!(
            code,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    };
    for (tree, named) in TREES {
        let root = repo.join(tree);
        println!("cargo::rerun-if-changed={}", root.display());
        let mut files = Vec::new();
        walk(&root, &mut files);
        for file in files {
            let rel = file
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            entry(&file, &format!("{named}/{rel}"));
        }
    }
    for (file, named) in FILES {
        let path = repo.join(file);
        println!("cargo::rerun-if-changed={}", path.display());
        entry(&path, named);
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
