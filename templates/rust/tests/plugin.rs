//! The built plugin on a sample event, as a queue would run it, without
//! Redis (`switchyard invoke`): the CRM's answer canned, key-value state
//! in memory. Build it first: cargo build --release --target wasm32-wasip2.

use switchyard_plugin::testing::invoke;

const PLUGIN: &str = "target/wasm32-wasip2/release/{{snake}}.wasm";

#[test]
fn a_chat_is_sent_counted_and_announced() {
    let report = invoke(
        PLUGIN,
        "chat.ended",
        "@event.json",
        &[
            "--config",
            "url=https://crm.example.com/chats",
            "--allow-host",
            "https://crm.example.com",
            "--http",
            "@answers.json",
        ],
    );
    assert_eq!(report["outcome"], "success", "{report}");
    assert_eq!(report["requests"][0]["status"], 201, "{report}");
    assert_eq!(report["keyvalue"]["chats"]["1001"], "1", "{report}");
    assert_eq!(report["published"][0]["type"], "crm.synced", "{report}");
}

#[test]
fn a_crm_outage_is_retried() {
    let report = invoke(
        PLUGIN,
        "chat.ended",
        "@event.json",
        &[
            "--config",
            "url=https://crm.example.com/chats",
            "--allow-host",
            "https://crm.example.com",
            "--http",
            "@answers-down.json",
        ],
    );
    // 503 with Retry-After: 30 s.
    assert_eq!(report["outcome"], "retry", "{report}");
    assert_eq!(report["delay_ms"], 30_000, "{report}");
    assert!(report["published"].as_array().unwrap().is_empty(), "{report}");
}
