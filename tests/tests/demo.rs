//! `switchyard demo`, the README's first command, on the shipped
//! queues.toml: it drains every queue, the stand-ins for the remote APIs
//! receive what the shipped plugins send, the rows land in PostgreSQL, the
//! mails in the SMTP receiver, and the summary says so.

use std::process::Command;

use switchyard_tests::*;

#[test]
fn the_demo_runs_end_to_end() {
    plugin("webhook");
    let mut cmd = Command::new(host_binary());
    cmd.args(["demo", "--config"])
        .arg(repo_root().join("queues.toml"))
        .arg("--events")
        .arg(repo_root().join("demo/events.jsonl"))
        .env("RUST_LOG", "warn")
        .env_remove("SWITCHYARD_REDIS_URL");
    // As on a fresh machine: no secrets in the environment.
    for (name, _) in SHIPPED_SECRETS {
        cmd.env_remove(name);
    }
    let out = cmd.output().expect("running switchyard demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for line in [
        "=== Switchyard demo: 21 events in",
        "WebHook -> webhook receiver stand-in: 5 requests, every signature verified",
        "Zendesk -> Zendesk Tickets API stand-in: 4 requests",
        "Salesforce -> Salesforce REST API stand-in: 2 requests",
        "Ticket -> ticket service stand-in: 3 requests",
        "PostgreSQL: 16 rows written, in 15 of its 17 tables",
        "  chat_messages                   2",
        "Mail relay: 3 mails received",
        "  to ana@example.com: Transcript of your chat of 2026-11-22T09:01:00",
        "Dead letters: 10",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
