//! `switchyard invoke` runs a plugin on one message as a queue would,
//! without Redis, and says what came of it: each outcome and its exit
//! status (success, retry with its delay, reject, trap with the plugin's
//! own panic text, timeout, the memory cap), key-value state seeded and
//! shown, what it publishes, HTTP sent under the grant or answered from
//! canned answers. `switchyard check --plugin` says what is wrong with a
//! file that is no plugin, and how to fix it.

use std::process::Command;

use serde_json::Value;
use switchyard_standins::{Api, StandIn};
use switchyard_tests::*;

/// Runs `switchyard <args>`; its stdout, stderr and exit code.
fn switchyard(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(host_binary())
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running switchyard");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

/// `switchyard invoke PLUGIN --type t --json <args>`: its report and exit
/// code.
fn invoke(plugin_name: &str, body: &str, args: &[&str]) -> (Value, i32) {
    let plugin = plugin(plugin_name);
    let mut all = vec![
        "invoke",
        plugin.to_str().unwrap(),
        "--type",
        "t",
        "--body",
        body,
        "--json",
    ];
    all.extend_from_slice(args);
    let (out, err, code) = switchyard(&all);
    let report = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (report, code)
}

#[test]
fn each_outcome_has_its_exit_status() {
    let (r, code) = invoke("io_probe", r#"{"steps": [], "then": "ok"}"#, &[]);
    assert_eq!((r["outcome"].as_str(), code), (Some("success"), 0), "{r}");
    assert_eq!(r["plugin"]["contract"], "0.2.0");

    let (r, code) = invoke("always_retry", "{}", &["--config", "delay_ms=2500"]);
    assert_eq!((r["outcome"].as_str(), code), (Some("retry"), 3), "{r}");
    assert_eq!(r["delay_ms"], 2500);
    assert_eq!(
        r["logs"][0]["message"],
        "attempt 1 of invoke-1 fails on purpose"
    );

    let (r, code) = invoke("always_retry", "{}", &["--attempt", "4", "--id", "m-9"]);
    assert_eq!(r["reason"], "upstream unavailable (attempt 4)", "{r}");
    assert_eq!(code, 3);

    let (r, code) = invoke("always_reject", "{}", &[]);
    assert_eq!((r["outcome"].as_str(), code), (Some("reject"), 4), "{r}");

    // A panic: the language's own message, not the runtime's backtrace.
    let (r, code) = invoke("trap", "{}", &[]);
    assert_eq!((r["outcome"].as_str(), code), (Some("trap"), 5), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("trap plugin panics on invoke-1"),
        "{r}"
    );
}

/// A queues.toml in a fresh folder named `name` with the queue `Tight`
/// (a 300 ms deadline, 8 MiB of memory); its path, and `--queue`'s value.
fn tight_queue(name: &str) -> (std::path::PathBuf, String) {
    let toml = tempdir(name).join("queues.toml");
    std::fs::write(
        &toml,
        format!(
            "[routes]\n\"t\" = [\"Tight\"]\n[queues.Tight]\nplugin = \"{}\"\nhandler_timeout = \"300ms\"\nmemory_mib = 8\n",
            plugin("spin").display()
        ),
    )
    .unwrap();
    let queue = format!("{}#Tight", toml.display());
    (toml, queue)
}

#[test]
fn a_queue_s_limits_apply_the_deadline_and_the_memory_cap() {
    let (toml, queue) = tight_queue("invoke-limits");
    let (r, code) = invoke("spin", "{}", &["--queue", &queue]);
    assert_eq!((r["outcome"].as_str(), code), (Some("timeout"), 5), "{r}");
    assert!(r["elapsed_ms"].as_f64().unwrap() < 3_000.0, "{r}");
    let (r, code) = invoke("hog", "{}", &["--queue", &queue]);
    assert_eq!(
        (r["outcome"].as_str(), code),
        (Some("memory_cap"), 5),
        "{r}"
    );
    // A queue the file does not have is named with those it has.
    let (_, err, code) = switchyard(&[
        "invoke",
        plugin("spin").to_str().unwrap(),
        "--type",
        "t",
        "--body",
        "{}",
        "--queue",
        &format!("{}#Nope", toml.display()),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("has no queue \"Nope\" (it has: Tight)"),
        "{err}"
    );
}

/// A large plugin's new version runs on Winch's code until Cranelift's is
/// ready: every outcome, the deadline and the memory cap are the same
/// there.
#[test]
fn winch_s_code_gives_every_outcome_and_keeps_the_limits() {
    let (_, queue) = tight_queue("invoke-winch");
    let cases: [(&str, &str, &[&str], &str, i32); 6] = [
        (
            "io_probe",
            r#"{"steps": [], "then": "ok"}"#,
            &[],
            "success",
            0,
        ),
        (
            "always_retry",
            "{}",
            &["--config", "delay_ms=2500"],
            "retry",
            3,
        ),
        ("always_reject", "{}", &[], "reject", 4),
        ("trap", "{}", &[], "trap", 5),
        ("spin", "{}", &["--queue", &queue], "timeout", 5),
        ("hog", "{}", &["--queue", &queue], "memory_cap", 5),
    ];
    for (name, body, args, outcome, status) in cases {
        let mut args = args.to_vec();
        args.extend(["--compiler", "winch"]);
        let (r, code) = invoke(name, body, &args);
        assert_eq!(r["plugin"]["compiler"], "winch", "{name}: {r}");
        assert_eq!(
            (r["outcome"].as_str(), code),
            (Some(outcome), status),
            "{name}: {r}"
        );
        match name {
            "always_retry" => assert_eq!(r["delay_ms"], 2500, "{r}"),
            "trap" => assert!(
                r["reason"]
                    .as_str()
                    .unwrap()
                    .contains("trap plugin panics on invoke-1"),
                "{r}"
            ),
            "spin" => assert!(r["elapsed_ms"].as_f64().unwrap() < 3_000.0, "{r}"),
            _ => {}
        }
    }
    // A Python plugin: the interpreter and the application on Winch's code.
    let (r, code) = invoke(
        "python_audit",
        r#"{"ChatGuid": "c-1"}"#,
        &["--compiler", "winch"],
    );
    assert_eq!(r["plugin"]["compiler"], "winch", "{r}");
    assert_eq!((r["outcome"].as_str(), code), (Some("success"), 0), "{r}");
    // Cranelift when asked, though Winch's code for it is cached now.
    let (r, code) = invoke(
        "python_audit",
        r#"{"ChatGuid": "c-1"}"#,
        &["--compiler", "cranelift"],
    );
    assert_eq!(r["plugin"]["compiler"], "cranelift", "{r}");
    assert_eq!((r["outcome"].as_str(), code), (Some("success"), 0), "{r}");
}

#[test]
fn key_value_state_and_publishes_are_shown() {
    let dir = tempdir("invoke-kv");
    let state = dir.join("state.json");
    std::fs::write(&state, r#"{"b": {"n": "40", "other": "x"}}"#).unwrap();
    let body = r#"{"steps": [
        {"kv": "increment", "bucket": "b", "key": "n", "delta": 2},
        {"kv": "set", "bucket": "b", "key": "greeting", "value": "hello"},
        {"publish": {"type": "crm.synced", "body": "{\"ok\":true}"}},
        {"publish": {"type": "crm.synced", "body": "{\"ok\":2}"}}
    ], "then": "ok"}"#;
    let seed = format!("@{}", state.display());
    let (r, code) = invoke("io_probe", body, &["--kv", &seed, "--id", "c-1"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["keyvalue"]["b"]["n"], "42");
    assert_eq!(r["keyvalue"]["b"]["greeting"], "hello");
    assert_eq!(r["keyvalue"]["b"]["other"], "x");
    assert_eq!(
        r["written"],
        serde_json::json!([["b", "n"], ["b", "greeting"]])
    );
    let published = r["published"].as_array().unwrap();
    assert_eq!(published.len(), 2, "{r}");
    assert_eq!(published[0]["type"], "crm.synced");
    assert_eq!(published[0]["id"], "c-1/Invoke/1");
    assert_eq!(published[1]["id"], "c-1/Invoke/2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_goes_out_under_the_grant_or_comes_from_canned_answers() {
    let echo = StandIn::start(Api::Echo).await.unwrap();
    let url = echo.url();
    let body = format!(
        r#"{{"steps": [
            {{"http": {{"method": "POST", "url": "{url}/hook", "body": "hi"}}}},
            {{"http": {{"method": "GET", "url": "http://10.9.8.7/"}}}}
        ], "then": "ok"}}"#
    );
    let grant = url.trim_end_matches('/').to_owned();
    let report = tokio::task::spawn_blocking({
        let body = body.clone();
        move || invoke("io_probe", &body, &["--allow-host", &grant])
    })
    .await
    .unwrap();
    let (r, code) = report;
    assert_eq!(code, 0, "{r}");
    let requests = r["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2, "{r}");
    assert_eq!(requests[0]["status"], 200);
    assert!(
        requests[1]["error"].as_str().unwrap().contains("Denied"),
        "{r}"
    );
    assert_eq!(
        echo.requests().len(),
        1,
        "only the granted request was sent"
    );

    // Canned: the same call, answered from the file, nothing sent.
    let dir = tempdir("invoke-http");
    let canned = dir.join("answers.json");
    std::fs::write(
        &canned,
        format!(r#"[{{"method": "POST", "url": "{url}/", "status": 503, "body": "down"}}]"#),
    )
    .unwrap();
    let grant = url.trim_end_matches('/').to_owned();
    let answers = format!("@{}", canned.display());
    let (r, _) = tokio::task::spawn_blocking(move || {
        invoke(
            "io_probe",
            &body,
            &["--allow-host", &grant, "--http", &answers],
        )
    })
    .await
    .unwrap();
    assert_eq!(r["requests"][0]["status"], 503, "{r}");
    assert_eq!(echo.requests().len(), 1, "a canned answer sends nothing");
}

#[test]
fn check_plugin_names_the_mistake_and_its_fix() {
    let dir = tempdir("check-plugin");
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let noop = std::fs::read(plugin("noop")).unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (
            plugin("wrong_world"),
            "fix: a plugin exports switchyard:plugin/handler",
        ),
        (plugin("wrong_signature"), "has the wrong type"),
        (
            plugin("foreign_import"),
            "imports `acme:crm/api@1.0.0`, which no contract version",
        ),
        (
            write("cut.wasm", &noop[..noop.len() / 2]),
            "fix: the file is cut short",
        ),
        (write("notes.wasm", b"hello"), "is not a WebAssembly file"),
        (
            write("core.wasm", b"\0asm\x01\0\0\0"),
            "is a core WebAssembly module, not a component",
        ),
    ];
    for (file, says) in cases {
        let (out, err, code) = switchyard(&["check", "--plugin", file.to_str().unwrap()]);
        assert_eq!(code, 1, "{}: {out}{err}", file.display());
        assert!(err.contains(says), "{}: {err}", file.display());
        assert!(err.lines().count() <= 2, "one line, and the fix: {err}");
    }
    let (out, err, code) = switchyard(&["check", "--plugin", plugin("noop").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("OK: contract 0.1.0"), "{out}");

    // With a queue: the imports its grants lack.
    let toml = write(
        "queues.toml",
        format!(
            "[routes]\n\"t\" = [\"Plain\"]\n[queues.Plain]\nplugin = \"{}\"\n",
            plugin("io_probe").display()
        )
        .as_bytes(),
    );
    let queue = format!("{}#Plain", toml.display());
    let (out, err, code) = switchyard(&[
        "check",
        "--plugin",
        plugin("io_probe").to_str().unwrap(),
        "--queue",
        &queue,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for grant in ["allowed_hosts", "[sql]", "[mail]", "publish", "[keyvalue]"] {
        assert!(out.contains(&format!("has no {grant}")), "{grant}: {out}");
    }
}
