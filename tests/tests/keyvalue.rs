//! Key-value state for plugins (`wasi:keyvalue`): each queue reaches only
//! its own buckets, within its quota, with keys that expire after the
//! grant's ttl; increments and compare-and-swap are atomic. The `io-probe`
//! plugin runs the operations and reports what each returned.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(20);

fn kv(op: &str, bucket: &str, key: &str, value: &str) -> Value {
    json!({ "kv": op, "bucket": bucket, "key": key, "value": value })
}

fn config(grant: &str) -> TestConfig {
    TestConfig::new(&format!(
        r#"
[routes]
"a" = ["KvA"]
"b" = ["KvB"]
"none" = ["NoKv"]
"count" = ["Counter"]

[queues.KvA]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.KvA.keyvalue]
{grant}

[queues.KvB]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1
[queues.KvB.keyvalue]

[queues.NoKv]
plugin = "@PLUGINS@/io_probe.wasm"
max_attempts = 1

[queues.Counter]
plugin = "@PLUGINS@/io_probe.wasm"
concurrency = 8
[queues.Counter.keyvalue]
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_queue_sees_only_its_own_buckets() {
    let mut host = TestHost::start_with(config("")).await;

    let a = probe(
        &mut host.conn,
        &host.cfg,
        "a",
        "a-1",
        json!([
            kv("set", "shared", "k", "alpha"),
            kv("get", "shared", "k", "")
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(a, [json!("ok"), json!("alpha")]);

    // The same bucket and key, from another queue: its own, empty.
    // Bucket names that look like paths or key syntax are just names.
    let b = probe(
        &mut host.conn,
        &host.cfg,
        "b",
        "b-1",
        json!([
            kv("get", "shared", "k", ""),
            kv("set", "shared", "k", "beta"),
            kv("get", "../KvA/shared", "k", ""),
            kv("get", "}:v:shared", "k", ""),
            kv(
                "get",
                &format!("{}v:shared", host.cfg.keys().keyvalue("KvA")),
                "k",
                ""
            ),
            json!({ "kv": "list", "bucket": "shared" }),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(b[0], Value::Null);
    assert_eq!(b[1], "ok");
    assert_eq!(b[2..5], [Value::Null, Value::Null, Value::Null]);
    assert_eq!(b[5]["keys"], json!(["k"]));

    let a = probe(
        &mut host.conn,
        &host.cfg,
        "a",
        "a-2",
        json!([kv("get", "shared", "k", "")]),
        LIMIT,
    )
    .await;
    assert_eq!(a, [json!("alpha")], "B's write did not touch A's key");

    // A queue without a grant cannot open a bucket.
    let none = probe(
        &mut host.conn,
        &host.cfg,
        "none",
        "n-1",
        json!([kv("get", "shared", "k", "")]),
        LIMIT,
    )
    .await;
    assert_eq!(
        none[0]["error"],
        "open: key-value state is not granted to this queue"
    );

    // Every key the plugins made is under its queue's own prefix.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:kv:*", host.cfg.prefix))
        .query_async(&mut host.conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    for k in &keys {
        let own = [
            host.cfg.keys().keyvalue("KvA"),
            host.cfg.keys().keyvalue("KvB"),
        ];
        assert!(own.iter().any(|p| k.starts_with(p)), "{k}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_bounds_keys_and_bytes() {
    let mut host = TestHost::start_with(config("max_keys = 3\nmax_kib = 1")).await;
    let big = "x".repeat(700);
    let r = probe(
        &mut host.conn,
        &host.cfg,
        "a",
        "q-1",
        json!([
            kv("set", "b", "k1", "1"),
            kv("set", "other", "k2", "2"),
            kv("set", "b", "k3", "3"),
            // A fourth key, in any bucket: over max_keys.
            kv("set", "b", "k4", "4"),
            // Overwriting a key adds no key.
            kv("set", "b", "k1", &big),
            // 700 + 700 bytes of values: over max_kib.
            kv("set", "b", "k3", &big),
            kv("set", "b", "k5", &"y".repeat(2000)),
            kv("delete", "b", "k3", ""),
            kv("set", "b", "k4", "4"),
        ]),
        LIMIT,
    )
    .await;
    host.stop().await;
    assert_eq!(r[..3], [json!("ok"), json!("ok"), json!("ok")], "{r:?}");
    assert_eq!(
        r[3]["error"], "quota exceeded: the queue may hold at most 3 keys",
        "{r:?}"
    );
    assert_eq!(r[4], "ok", "{r:?}");
    assert_eq!(
        r[5]["error"], "quota exceeded: the queue may hold at most 1024 bytes of values",
        "{r:?}"
    );
    assert_eq!(
        r[6]["error"],
        "quota exceeded: a value of 2000 bytes is more than the queue may hold (1024 bytes)",
        "{r:?}"
    );
    assert_eq!(r[7..], [json!("ok"), json!("ok")], "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_after_the_ttl_and_stop_counting() {
    let mut host = TestHost::start_with(config("max_keys = 1\nttl = \"1s\"")).await;
    let r = probe(
        &mut host.conn,
        &host.cfg,
        "a",
        "t-1",
        json!([
            kv("set", "b", "first", "1"),
            kv("get", "b", "first", ""),
            kv("set", "b", "second", "2"),
        ]),
        LIMIT,
    )
    .await;
    assert_eq!(r[..2], [json!("ok"), json!("1")], "{r:?}");
    assert!(r[2]["error"].as_str().unwrap().contains("at most 1 keys"));
    // Redis expires the key after its ttl.
    let key = format!("{}v:b\0first", host.cfg.keys().keyvalue("KvA"));
    let mut conn = host.conn.clone();
    wait_for(LIMIT, "the key expired", async || {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        exists == 0
    })
    .await;
    let r = probe(
        &mut host.conn,
        &host.cfg,
        "a",
        "t-2",
        json!([
            kv("get", "b", "first", ""),
            kv("set", "b", "second", "2"),
            json!({ "kv": "list", "bucket": "b" }),
        ]),
        LIMIT,
    )
    .await;
    host.stop().await;
    assert_eq!(r[0], Value::Null, "{r:?}");
    assert_eq!(r[1], "ok", "the expired key no longer counts: {r:?}");
    assert_eq!(r[2]["keys"], json!(["second"]), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_and_compare_and_swap_are_atomic() {
    let mut host = TestHost::start_with(config("")).await;

    // 100 messages, 8 at a time, each adding 1 to one counter.
    let n = 100;
    for i in 0..n {
        send_probe(
            &mut host.conn,
            &host.cfg,
            "count",
            &format!("c-{i}"),
            json!([{ "kv": "increment", "bucket": "b", "key": "hits", "delta": 1 }]),
            "ok",
        )
        .await;
    }
    let m = host.metrics.clone();
    wait_for(LIMIT, "every increment", || {
        let done = m.queues().get("Counter").is_some_and(|q| q.succeeded == n);
        async move { done }
    })
    .await;

    let r = probe(
        &mut host.conn,
        &host.cfg,
        "a",
        "x-1",
        json!([
            { "kv": "cas", "bucket": "b", "key": "token", "value": "v1" },
            { "kv": "cas", "bucket": "b", "key": "token", "expect": "v1", "value": "v2" },
            { "kv": "cas", "bucket": "b", "key": "token", "expect": "v1", "value": "v3" },
            kv("get", "b", "token", ""),
            kv("set", "b", "text", "abc"),
            { "kv": "increment", "bucket": "b", "key": "text", "delta": 1 },
            // Past 2^53, where a double no longer holds every integer.
            { "kv": "increment", "bucket": "b", "key": "big", "delta": 9_007_199_254_740_993_i64 },
            { "kv": "increment", "bucket": "b", "key": "big", "delta": 2 },
            { "kv": "increment", "bucket": "b", "key": "max", "delta": i64::MAX },
            { "kv": "increment", "bucket": "b", "key": "max", "delta": 1 },
        ]),
        LIMIT,
    )
    .await;
    let hits: String = redis::cmd("GET")
        .arg(format!("{}v:b\0hits", host.cfg.keys().keyvalue("Counter")))
        .query_async(&mut host.conn)
        .await
        .unwrap();
    host.stop().await;
    assert_eq!(hits, n.to_string());
    assert_eq!(r[0], "swapped", "{r:?}");
    assert_eq!(r[1], "swapped", "{r:?}");
    assert_eq!(r[2], json!({ "current": "v2" }), "{r:?}");
    assert_eq!(r[3], "v2", "{r:?}");
    assert!(
        r[5]["error"]
            .as_str()
            .unwrap()
            .contains("not a 64-bit integer"),
        "{r:?}"
    );
    assert_eq!(r[6], json!(9_007_199_254_740_993_i64), "{r:?}");
    assert_eq!(r[7], json!(9_007_199_254_740_995_i64), "{r:?}");
    assert_eq!(r[8], json!(i64::MAX), "{r:?}");
    assert!(r[9]["error"].is_string(), "an overflow is an error: {r:?}");
}
