//! The chaos test, short variant: 20,000 messages, the host SIGKILLed 10
//! times at random moments and redis-server (AOF, appendfsync always) twice,
//! then a full drain. Nothing acknowledged may be lost, and nothing may be
//! left pending. The long variant is `cargo run --release -p
//! switchyard-bench --bin chaos`.

use switchyard_tests::chaos::{self, ChaosOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_message_is_lost_under_kills() {
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let opts = ChaosOptions {
        messages: 20_000,
        host_kills: 10,
        redis_kills: 2,
        seed,
        rate: 1_000,
    };
    let report = chaos::run(&opts).await.unwrap();
    println!("chaos (seed {seed}): {report}");
    assert_eq!(report.acknowledged, opts.messages, "{report}");
    assert_eq!(report.host_kills, 10);
    assert_eq!(report.redis_kills, 2);
    assert!(
        report.lost.is_empty(),
        "lost {:?}… (seed {seed}): {report}",
        &report.lost[..report.lost.len().min(10)]
    );
    assert!(report.unexpected.is_empty(), "{report}");
    assert_eq!(report.pending_left, 0, "{report}");
    assert_eq!(report.dead_lettered, 0, "{report}");
    assert_eq!(report.handled, opts.messages, "{report}");
}
