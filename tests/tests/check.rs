//! `switchyard check`: the shipped queues.toml passes; a broken file gets
//! every error at once, each naming its key; a plugin that is not a
//! component of the contract is refused with the reason.

use std::process::Command;

use switchyard_tests::*;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(host_binary())
        .arg("check")
        .arg("--config")
        .arg(path)
        .env("RUST_LOG", "warn")
        .output()
        .expect("running switchyard check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_shipped_configuration_passes() {
    plugin("persistence");
    let (ok, out) = check(&repo_root().join("queues.toml"));
    assert!(ok, "{out}");
    assert!(
        out.contains("OK (17 message types, 6 queues, 4 plugins)"),
        "{out}"
    );
}

#[test]
fn every_error_is_reported_with_its_key() {
    plugin("sleep");
    let dir = tempdir("check-errors");
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[ingress]
stream = "chat:events"
batch = 0

[routes]
"chat.ended" = ["Email", "Ghost"]
"chat.started" = []

[queues.Email]
plugin = "{}/sleep.wasm"
concurrency = 0
colour = "blue"

[queues.Ticket]
plugin = "missing.wasm"
visibility_timeout = "500ms"
"#,
            plugin_dir().display()
        ),
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    for expected in [
        "has 7 errors",
        "line 4: ingress.batch: must be between 1 and 10000",
        "routes.\"chat.ended\": routes to undeclared queue \"Ghost\"",
        "routes.\"chat.started\": routes to no queue",
        "queues.Email.concurrency: must be between 1 and 1024, found 0",
        "queues.Email.colour: unknown key",
        "queues.Ticket.plugin: plugin file",
        "queues.Ticket.visibility_timeout: must be at least 1s",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_plugin_that_is_not_a_contract_component_is_refused() {
    let dir = tempdir("check-plugins");
    // Not WebAssembly at all, a truncated component, a core module, and a
    // component of another world.
    std::fs::write(dir.join("text.wasm"), "hello").unwrap();
    let good = std::fs::read(plugin("sleep")).unwrap();
    std::fs::write(dir.join("truncated.wasm"), &good[..good.len() / 2]).unwrap();
    std::fs::write(dir.join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::copy(plugin("wrong_world"), dir.join("wrong-world.wasm")).unwrap();
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        r#"
[routes]
"a" = ["Text", "Truncated", "Core", "Other"]
[queues.Text]
plugin = "text.wasm"
[queues.Truncated]
plugin = "truncated.wasm"
[queues.Core]
plugin = "core.wasm"
[queues.Other]
plugin = "wrong-world.wasm"
"#,
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    for queue in ["Text", "Truncated", "Core"] {
        assert!(
            out.contains(&format!("queues.{queue}.plugin: "))
                && out.contains("not a valid WebAssembly component"),
            "{queue} not refused in:\n{out}"
        );
    }
    assert!(
        out.contains("queues.Other.plugin: ")
            && out.contains("does not fit the switchyard:plugin@0.1.0 `plugin` world"),
        "wrong world not refused in:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
