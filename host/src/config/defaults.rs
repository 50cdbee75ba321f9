//! Every default of queues.toml, in one place (the README's table of
//! settings says the same).

use std::time::Duration;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub const PREFIX: &str = "switchyard";
pub const SHUTDOWN_TIMEOUT: Duration = secs(10);
pub const PLUGIN_COMPILE_TIMEOUT: Duration = secs(60);
pub const PLUGIN_COMPILE_MEMORY_MIB: i64 = 2048;
pub const MAX_PLUGIN_MIB: i64 = 128;

pub const INGRESS_STREAM: &str = "chat:events";
pub const INGRESS_BATCH: i64 = 256;
pub const INGRESS_VISIBILITY_TIMEOUT: Duration = secs(30);
pub const MAX_ENTRY_KIB: i64 = 1024;
pub const INGRESS_PARTITIONS: i64 = 1;

pub const WAIT_REPLICAS: i64 = 0;
pub const WAIT_TIMEOUT: Duration = secs(1);

pub const RETENTION_INTERVAL: Duration = secs(60);
pub const KEEP_HANDLED: Duration = secs(3600);
pub const DEAD_LETTER_AGE: Duration = secs(15 * 24 * 3600);
pub const DEAD_LETTER_MAX_LEN: i64 = 0;
pub const IDLE_CONSUMER: Duration = secs(3600);

pub const ADMIN_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9464),
);
pub const STATS_INTERVAL: Duration = secs(5);

pub const CONCURRENCY: i64 = 4;
pub const CONCURRENCY_MIN: i64 = 1;
pub const HANDLER_TIMEOUT: Duration = secs(10);
pub const MEMORY_MIB: i64 = 64;
pub const VISIBILITY_TIMEOUT: Duration = secs(60);
pub const MAX_ATTEMPTS: i64 = 15;
pub const MAX_TRAP_ATTEMPTS: i64 = 3;
pub const RETRY_QUICK: i64 = 3;
pub const RETRY_QUICK_DELAY: Duration = Duration::from_millis(100);
pub const RETRY_DELAY: Duration = secs(30);
pub const MAX_HOPS: i64 = 8;
pub const MAX_PUBLISH_PER_CALL: i64 = 16;

pub const HTTP_TIMEOUT: Duration = secs(10);
pub const MAX_RESPONSE_KIB: i64 = 1024;
pub const MAX_REQUESTS_PER_CALL: i64 = 20;
pub const MAX_CONNECTIONS_PER_HOST: i64 = 8;

pub const KV_MAX_KEYS: i64 = 10_000;
pub const KV_MAX_KIB: i64 = 10 * 1024;

pub const SQL_POOL: i64 = 4;
pub const SQL_TIMEOUT: Duration = secs(5);
pub const SQL_MAX_ROWS: i64 = 10_000;
pub const SQL_MAX_RESULT_KIB: i64 = 4096;

pub const MAIL_POOL: i64 = 4;
pub const MAIL_TIMEOUT: Duration = secs(30);
pub const MAIL_MAX_PER_CALL: i64 = 10;
pub const MAIL_MAX_RECIPIENTS: i64 = 50;
pub const MAIL_MAX_KIB: i64 = 1024;
