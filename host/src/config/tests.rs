//! The model's tests: parsing, validation and the change report, on
//! files written in the tests.

use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let dir = std::env::temp_dir();
    let plugin = dir.join("switchyard-config-test.wasm");
    std::fs::write(&plugin, b"\0asm").unwrap();
    Config::parse(
        &text.replace("PLUGIN", plugin.to_str().unwrap()),
        &dir.join("queues.toml"),
    )
}

#[test]
fn reads_a_valid_file_with_defaults() {
    let c = parse(
        r#"
        [routes]
        "Chat.Ended" = ["Email", "Persistence"]
        [queues.Email]
        plugin = "PLUGIN"
        [queues.Persistence]
        plugin = "PLUGIN"
        concurrency = 2
        handler_timeout = "250ms"
        max_entry_kib = 64
        [queues.Persistence.config]
        table = "chats"
        "#,
    )
    .unwrap();
    assert_eq!(c.host.prefix, "switchyard");
    assert_eq!(c.ingress.stream, "chat:events");
    assert_eq!(c.ingress.max_entry_bytes, 1024 * 1024);
    assert_eq!(c.routes["chat.ended"], ["Email", "Persistence"]);
    let p = &c.queues["Persistence"];
    assert_eq!(p.concurrency, 2);
    assert_eq!(p.handler_timeout, Duration::from_millis(250));
    assert_eq!(p.max_entry_bytes, 64 * 1024);
    assert_eq!(p.plugin_config["table"], "chats");
    assert_eq!(c.queues["Email"].concurrency, 4);
    assert_eq!(c.queues["Email"].max_entry_bytes, 1024 * 1024);
}

#[test]
fn reports_every_error_with_its_key_and_line_in_line_order() {
    let err = parse(
        r#"
        [host]
        prefx = "x"
        [routes]
        "chat.ended" = ["Email", "Nowhere"]
        [queues.Email]
        plugin = "missing.wasm"
        concurrency = 0
        colour = "blue"
        handler_timeout = "soon"
        "#,
    )
    .unwrap_err();
    let text = err.to_string();
    let keys: Vec<&str> = err.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "host.prefx",
            "routes.\"chat.ended\"",
            "queues.Email.plugin",
            "queues.Email.concurrency",
            "queues.Email.colour",
            "queues.Email.handler_timeout",
        ],
        "{text}"
    );
    let lines: Vec<usize> = err.errors.iter().map(|e| e.line.unwrap()).collect();
    assert_eq!(lines, [3, 5, 7, 8, 9, 10], "{text}");
    assert!(text.contains("undeclared queue \"Nowhere\""), "{text}");
    assert!(text.contains("line 3: host.prefx: unknown key"), "{text}");
    assert!(
        text.contains("line 8: queues.Email.concurrency: must be between 1 and 1024, found 0"),
        "{text}"
    );
    assert!(
        text.contains(
            "line 10: queues.Email.handler_timeout: \"soon\" is not a duration: write a number and a unit, like \"250ms\""
        ),
        "{text}"
    );
}

#[test]
fn a_route_is_a_list_of_queues_or_a_table_that_may_validate() {
    let c = parse(
        r#"
        [routes]
        "Chat.Ended" = { queues = ["Email"], validate = true }
        "chat.started" = { queues = ["Email"] }
        "custom.event" = ["Email"]
        [queues.Email]
        plugin = "PLUGIN"
        "#,
    )
    .unwrap();
    assert_eq!(c.routes["chat.ended"], ["Email"]);
    assert_eq!(c.routes["chat.started"], ["Email"]);
    assert_eq!(c.routes["custom.event"], ["Email"]);
    assert_eq!(c.validated.iter().collect::<Vec<_>>(), ["chat.ended"]);

    let err = parse(
        r#"
        [routes]
        "custom.event" = { queues = ["Email"], validate = true }
        "chat.ended" = { queues = ["Email"], validat = true }
        "chat.started" = { queues = "Email", validate = "yes" }
        "chat.queued" = { validate = false }
        "ban.added" = "Email"
        "chat.rating.submitted" = ["Email", 1]
        [queues.Email]
        plugin = "PLUGIN"
        "#,
    )
    .unwrap_err();
    let text = err.to_string();
    for said in [
        r#"routes."custom.event": validate = true, but the chat events schema has no message type "custom.event" (it has "#,
        r#"routes."chat.ended".validat: unknown key (a route's table has `queues` and `validate`)"#,
        r#"routes."chat.started".queues: must be an array of queue names, found string"#,
        r#"routes."chat.started".validate: must be true or false, found string"#,
        r#"routes."chat.queued": a route's table needs `queues`, the queues it fans out to"#,
        r#"routes."ban.added": must be an array of queue names, or a table { queues = [...], validate = true }, found string"#,
        r#"routes."chat.rating.submitted": must be an array of queue names (strings)"#,
    ] {
        assert!(text.contains(said), "{said}\nnot in\n{text}");
    }
    assert_eq!(err.errors.len(), 7, "{text}");
}

#[test]
fn a_syntax_error_is_one_line_with_its_line_number() {
    let err = parse("[routes]\n\"a\" = [\"A\"]\n[queues.A\nplugin = \"x\"\n").unwrap_err();
    assert_eq!(err.errors.len(), 1);
    let e = err.errors[0].to_string();
    assert!(e.starts_with("line 3: not valid TOML: "), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn durations_are_bounded() {
    let err = parse(
        r#"
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "PLUGIN"
        handler_timeout = "500000000000y"
        retry_delay = "2y"
        "#,
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("queues.Q.handler_timeout: \"500000000000y\" is"),
        "{text}"
    );
    assert!(
        text.contains("queues.Q.retry_delay: \"2y\" is longer than the 1year allowed"),
        "{text}"
    );
}

#[test]
fn contradictions_are_warnings() {
    let c = parse(
        r#"
        [ingress]
        max_entry_kib = 100
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "PLUGIN"
        visibility_timeout = "1m"
        retry_delay = "30s"
        retry_delay_max = "10m"
        max_entry_kib = 200
        "#,
    )
    .unwrap();
    let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("queues.Q.retry_delay_max: 10m is longer than visibility_timeout (1m)"),
        "{w:?}"
    );
    assert!(
        w[1].contains("queues.Q.max_entry_kib: 200 is more than ingress.max_entry_kib (100)"),
        "{w:?}"
    );
}

#[test]
fn a_missing_shipped_plugin_says_how_to_build_it() {
    let err = parse(
        r#"
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "target/wasm32-wasip2/release/nothing.wasm"
        "#,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not exist (build the shipped plugins with ./scripts/build-plugins.sh)"),
        "{err}"
    );
}

#[test]
fn changes_say_what_applies_now_and_what_at_restart() {
    let old = parse(
        r#"
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "PLUGIN"
        "#,
    )
    .unwrap();
    let new = parse(
        r#"
        [host]
        prefix = "other"
        [ingress]
        batch = 10
        [retention]
        interval = "5s"
                    [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "PLUGIN"
        concurrency = 8
        [queues.Q.config]
        token = "s3cret"
        "#,
    )
    .unwrap();
    let c = ConfigChanges::between(&old, &new);
    let shown = |changes: &[Change]| changes.iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(shown(&c.at_restart), ["host.prefix: switchyard -> other"]);
    assert_eq!(
        shown(&c.applied),
        [
            "ingress.batch: 256 -> 10",
            "queues.Q.concurrency: 4 -> 8",
            "queues.Q.config.token: added",
            "retention.interval: 1m -> 5s",
        ]
    );
    assert!(ConfigChanges::between(&old, &old).is_empty());
}

#[test]
fn accepts_a_built_in_handler_by_name() {
    let c = parse(
        r#"
        [routes]
        "a" = ["Discard"]
        [queues.Discard]
        plugin = "builtin:noop"
        "#,
    )
    .unwrap();
    assert_eq!(
        c.queues["Discard"].plugin,
        PluginRef::Builtin("noop".into())
    );
    // The name is checked against the host's registry of native handlers
    // before the file is used (preflight), not while it is read.
    let c = parse(
        r#"
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "builtin:nothing"
        "#,
    )
    .unwrap();
    assert_eq!(c.queues["Q"].plugin, PluginRef::Builtin("nothing".into()));
}

#[test]
fn rejects_a_visibility_timeout_under_a_second() {
    let err = parse(
        r#"
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "PLUGIN"
        visibility_timeout = "500ms"
        "#,
    )
    .unwrap_err();
    assert_eq!(err.errors[0].key, "queues.Q.visibility_timeout");
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let c = parse(
        r#"
        [routes]
        "a" = ["Q"]
        [queues.Q]
        plugin = "PLUGIN"
        retry_quick = 2
        retry_quick_delay = "250ms"
        retry_delay = "1s"
        retry_delay_max = "5s"
        "#,
    )
    .unwrap();
    let q = &c.queues["Q"];
    let delays: Vec<u128> = (2..9)
        .map(|a| q.retry_policy().backoff(a).as_millis())
        .collect();
    assert_eq!(delays, [250, 250, 1000, 2000, 4000, 5000, 5000]);
}
