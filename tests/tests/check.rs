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
        .envs(SHIPPED_SECRETS.iter().copied())
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
fn the_shipped_configuration_passes_without_warnings() {
    plugin("persistence");
    let (ok, out) = check(&repo_root().join("queues.toml"));
    assert!(ok, "{out}");
    assert!(
        out.contains("OK (17 message types, 6 queues, 6 plugins)"),
        "{out}"
    );
    assert!(!out.contains("warning"), "{out}");
}

/// Writes `text` as queues.toml in a fresh folder, with `files` beside it.
fn config_with(name: &str, text: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
    let dir = tempdir(name);
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        text.replace("@PLUGINS@", plugin_dir().to_str().unwrap()),
    )
    .unwrap();
    path
}

#[test]
fn contradicting_retry_delays_are_a_warning() {
    plugin("sleep");
    let path = config_with(
        "check-warnings",
        r#"
[routes]
"a" = ["Q"]
[queues.Q]
plugin = "@PLUGINS@/sleep.wasm"
visibility_timeout = "1m"
retry_delay_max = "10m"
"#,
        &[],
    );
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "warning: line 7: queues.Q.retry_delay_max: 10m is longer than visibility_timeout (1m); retries wait at most visibility_timeout"
        ),
        "{out}"
    );
}

#[test]
fn a_duration_too_long_to_add_to_a_clock_is_refused() {
    plugin("sleep");
    let path = config_with(
        "check-durations",
        r#"
[routes]
"a" = ["Q"]
[queues.Q]
plugin = "@PLUGINS@/sleep.wasm"
handler_timeout = "500000000000y"
"#,
        &[],
    );
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("line 6: queues.Q.handler_timeout: \"500000000000y\""),
        "{out}"
    );
}

#[test]
fn the_export_type_is_checked_with_both_types_named() {
    let path = config_with(
        "check-signature",
        r#"
[routes]
"a" = ["Q"]
[queues.Q]
plugin = "@PLUGINS@/wrong_signature.wasm"
"#,
        &[],
    );
    plugin("wrong_signature");
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("queues.Q.plugin"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains(
            "`handle` of switchyard:plugin/handler@0.1.0 has the wrong type: expected func(message: record { id: string, message-type: string, queue: string, body: string, headers: list<tuple<string, string>>, attempt: u32 }) -> result<_, variant { retry(record { reason: string, delay-ms: option<u64> }), reject(string) }>, found func(message: string)"
        ),
        "{line}"
    );
}

#[test]
fn a_plugin_whose_initial_memory_exceeds_the_cap_is_refused_with_both_numbers() {
    plugin("bigmem");
    let path = config_with(
        "check-memory",
        r#"
[routes]
"a" = ["Small", "Large"]
[queues.Small]
plugin = "@PLUGINS@/bigmem.wasm"
memory_mib = 64
[queues.Large]
plugin = "@PLUGINS@/bigmem.wasm"
memory_mib = 128
"#,
        &[],
    );
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "refused: its initial memory is 82 MiB, more than queues.Small.memory_mib (64 MiB)"
        ),
        "{out}"
    );
    assert!(!out.contains("queues.Large"), "{out}");
}

/// The ends of a component's top-level sections.
fn section_ends(bytes: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let mut i = 8;
    while i < bytes.len() {
        i += 1;
        let (mut size, mut shift) = (0usize, 0);
        loop {
            let b = bytes[i];
            i += 1;
            size |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b < 0x80 {
                break;
            }
        }
        i += size;
        ends.push(i);
    }
    ends
}

#[test]
fn a_file_cut_between_sections_is_reported_as_truncated() {
    let good = std::fs::read(plugin("sleep")).unwrap();
    let ends = section_ends(&good);
    // Cut after the first section, in the middle, and before the exports.
    let cuts = [ends[0], ends[ends.len() / 2], ends[ends.len() - 6]];
    let files: Vec<(String, Vec<u8>)> = cuts
        .iter()
        .enumerate()
        .map(|(i, &end)| (format!("cut{i}.wasm"), good[..end].to_vec()))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let path = config_with(
        "check-truncated",
        r#"
[routes]
"a" = ["C0", "C1", "C2"]
[queues.C0]
plugin = "cut0.wasm"
[queues.C1]
plugin = "cut1.wasm"
[queues.C2]
plugin = "cut2.wasm"
"#,
        &borrowed,
    );
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    for i in 0..3 {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("queues.C{i}.plugin")))
            .unwrap_or_else(|| panic!("C{i} not refused:\n{out}"));
        assert!(
            line.contains("not a valid WebAssembly component")
                && line.contains("the file is truncated"),
            "{line}"
        );
    }
}

#[test]
fn a_slow_compile_is_stopped_by_its_cpu_budget_and_others_pass_under_load() {
    plugin("sleep");
    let path = config_with(
        "check-slow",
        r#"
[host]
cache_dir = ""
plugin_compile_timeout = "1s"
[routes]
"a" = ["Slow", "Sleep", "Persistence", "Webhook"]
[queues.Slow]
plugin = "slow.wasm"
[queues.Sleep]
plugin = "@PLUGINS@/sleep.wasm"
[queues.Persistence]
plugin = "@PLUGINS@/persistence.wasm"
[queues.Webhook]
plugin = "@PLUGINS@/webhook.wasm"
"#,
        &[("slow.wasm", &slow_component(60_000))],
    );
    // Both cores busy while check runs: a budget of CPU time, not of wall
    // time, is unmoved by it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let (ok, out) = check(&path);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in spinners {
        s.join().unwrap();
    }
    assert!(!ok, "{out}");
    let refused: Vec<&str> = out.lines().filter(|l| l.contains(" refused: ")).collect();
    assert_eq!(refused.len(), 1, "{out}");
    assert!(
        refused[0].contains("queues.Slow.plugin")
            && refused[0]
                .contains("compiling took more than 1s of CPU time (host.plugin_compile_timeout)"),
        "{out}"
    );
    // The 60,000-function compile needs about 9 s of CPU; stopped at 1 s.
    assert!(took < std::time::Duration::from_secs(30), "{took:?}");
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
                        && out.contains("does not fit the switchyard:plugin contract: no export switchyard:plugin/handler@0.2.0 (or switchyard:plugin/handler@0.1.0) (it exports: run)"),
        "wrong world not refused in:\n{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_plugin_path_that_is_not_a_regular_file_is_refused_without_reading_it() {
    let dir = tempdir("check-device");
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.wasm")).unwrap();
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        "[routes]\n\"a\" = [\"Q\"]\n[queues.Q]\nplugin = \"zero.wasm\"\n",
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("queues.Q.plugin") && out.contains("not a regular file"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_cache_folder_others_can_write_to_is_refused() {
    plugin("sleep");
    let dir = tempdir("check-cache");
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = config_with(
        "check-cache-config",
        &format!(
            "[host]\ncache_dir = \"{}\"\n[routes]\n\"a\" = [\"Q\"]\n[queues.Q]\nplugin = \"@PLUGINS@/sleep.wasm\"\n",
            shared.display()
        ),
        &[],
    );
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("must be a folder of this user that no one else can write to"),
        "{out}"
    );
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o777, "the folder's permissions are left alone");
    let _ = std::fs::remove_dir_all(dir);
}

/// `ca_file` and TLS settings: a file that is missing or holds no
/// certificate, a CA for a database URL that does not ask for TLS, and
/// libpq's `sslmode=verify-full` (the host always verifies) are refused,
/// each naming its key; a CA file of PEM certificates passes.
#[test]
fn ca_files_and_tls_modes_are_checked_with_their_keys() {
    plugin("sleep");
    let ca = switchyard_standins::tls::TestCa::new();
    let queue = |name: &str, grant: &str| {
        format!("\n[queues.{name}]\nplugin = \"@PLUGINS@/sleep.wasm\"\n[queues.{name}.{grant}]\n")
    };
    let text = format!(
        "[routes]\n\"a\" = [\"Good\", \"Plain\", \"Verify\", \"Missing\", \"NotPem\", \"Device\", \"Relay\"]\n{}{}{}{}{}{}{}",
        queue("Good", "sql")
            + "database_url = \"postgres://u:p@db.example/chat?sslmode=require\"\nca_file = \"ca.pem\"\n",
        queue("Plain", "sql")
            + "database_url = \"postgres://u:p@db.example/chat\"\nca_file = \"ca.pem\"\n",
        queue("Verify", "sql")
            + "database_url = \"postgres://u:p@db.example/chat?sslmode=verify-full\"\n",
        queue("Missing", "mail") + "smtp_url = \"smtps://relay.example\"\nca_file = \"gone.pem\"\n",
        queue("NotPem", "mail") + "smtp_url = \"smtps://relay.example\"\nca_file = \"notes.txt\"\n",
        queue("Device", "mail") + "smtp_url = \"smtps://relay.example\"\nca_file = \"/dev/zero\"\n",
        queue("Relay", "mail") + "smtp_url = \"smtps://relay.example\"\nca_file = \"ca.pem\"\n",
    );
    let path = config_with(
        "check-tls",
        &text,
        &[
            ("ca.pem", ca.ca_pem().as_bytes()),
            ("notes.txt", b"not a certificate"),
        ],
    );
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    for expected in [
        "has 5 errors",
        "queues.Plain.sql.ca_file: is set, but database_url does not ask for TLS (add ?sslmode=require)",
        "queues.Verify.sql.database_url: sslmode: write sslmode=require",
        "queues.Missing.mail.ca_file: ",
        "gone.pem: No such file",
        "queues.NotPem.mail.ca_file: ",
        "notes.txt: holds no certificate",
        "queues.Device.mail.ca_file: /dev/zero: not a regular file",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    for fine in ["queues.Good.", "queues.Relay."] {
        assert!(!out.contains(fine), "{fine} in:\n{out}");
    }
    // queues.toml itself is read the same way.
    let (ok, out) = check(std::path::Path::new("/dev/zero"));
    assert!(!ok);
    assert!(
        out.contains("cannot read /dev/zero: not a regular file"),
        "{out}"
    );

    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn an_import_no_contract_has_is_named_and_missing_grants_are_warned() {
    let dir = tempdir("check-imports");
    std::fs::copy(plugin("foreign_import"), dir.join("foreign.wasm")).unwrap();
    let path = dir.join("queues.toml");
    std::fs::write(
        &path,
        r#"
[routes]
"a" = ["Foreign"]
[queues.Foreign]
plugin = "foreign.wasm"
"#,
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("queues.Foreign.plugin: ")
            && out.contains("it imports `acme:crm/api@1.0.0`, which no contract version this host runs provides (contract 0.2.0 provides switchyard:plugin/{messages, log, config, publish, sql, mail}@0.2.0, "),
        "{out}"
    );
    assert!(!out.contains("has the wrong type"), "{out}");

    // A plugin importing every capability, on a queue that grants none.
    std::fs::write(
        &path,
        format!(
            r#"
[routes]
"a" = ["Bare"]
[queues.Bare]
plugin = "{}/io_probe.wasm"
"#,
            plugin_dir().display()
        ),
    )
    .unwrap();
    let (ok, out) = check(&path);
    assert!(ok, "{out}");
    for (import, grant) in [
        ("wasi:http/outgoing-handler@", "allowed_hosts"),
        ("wasi:keyvalue/store@0.2.0-draft2", "[keyvalue]"),
        ("switchyard:plugin/publish@0.2.0", "publish"),
        ("switchyard:plugin/sql@0.2.0", "[sql]"),
        ("switchyard:plugin/mail@0.2.0", "[mail]"),
    ] {
        let line = out
            .lines()
            .find(|l| l.contains(import))
            .unwrap_or_else(|| panic!("no warning for {import} in:\n{out}"));
        assert!(
            line.starts_with("warning: queues.Bare: its plugin imports ")
                && line.contains(&format!("but the queue has no {grant}:")),
            "{line}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn relay_credentials_never_travel_unencrypted_beyond_loopback() {
    plugin("sleep");
    let queue = |name: &str, mail: &str| {
        format!(
            "\n[queues.{name}]\nplugin = \"@PLUGINS@/sleep.wasm\"\n[queues.{name}.mail]\n{mail}\n"
        )
    };
    let cases = [
        (
            "Plain",
            "smtp_url = \"smtp://u:p@relay.example:587\"",
            false,
        ),
        (
            "Opportunistic",
            "smtp_url = \"smtp://u:p@relay.example?tls=opportunistic\"",
            false,
        ),
        (
            "Apart",
            "smtp_url = \"smtp://relay.example\"\nusername = \"u\"\npassword = \"p\"",
            false,
        ),
        ("Loopback", "smtp_url = \"smtp://u:p@127.0.0.1:2525\"", true),
        (
            "Localhost",
            "smtp_url = \"smtp://u:p@localhost:2525\"",
            true,
        ),
        (
            "StartTls",
            "smtp_url = \"smtp://u:p@relay.example?tls=required\"",
            true,
        ),
        ("Tls", "smtp_url = \"smtps://u:p@relay.example\"", true),
        ("NoLogin", "smtp_url = \"smtp://relay.example\"", true),
    ];
    let names: Vec<String> = cases.iter().map(|(n, _, _)| format!("\"{n}\"")).collect();
    let mut text = format!("[routes]\n\"a\" = [{}]\n", names.join(", "));
    for (name, mail, _) in &cases {
        text.push_str(&queue(name, mail));
    }
    let path = config_with("check-smtp-clear", &text, &[]);
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(out.contains("has 3 errors"), "{out}");
    for (name, _, fine) in cases {
        let key =
            format!("queues.{name}.mail.smtp_url: would send the relay's credentials without TLS");
        assert_eq!(!out.contains(&key), fine, "{name} in:\n{out}");
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn an_unknown_built_in_handler_is_refused_with_the_known_ones() {
    let path = config_with(
        "check-builtin",
        "[routes]\n\"a\" = [\"Q\"]\n[queues.Q]\nplugin = \"builtin:nothing\"\n",
        &[],
    );
    let (ok, out) = check(&path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("queues.Q.plugin: builtin:nothing refused: no built-in handler \"builtin:nothing\" (there are: builtin:noop, builtin:http-post)"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
