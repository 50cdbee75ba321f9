//! The `[redis]` table: credentials and TLS besides the URL, and how long
//! the host waits for replicas.

use std::path::Path;
use std::time::Duration;

use super::super::RedisSettings;
use super::super::defaults as d;
use super::super::raw::RawRedis;
use super::context::{ca_file, maybe_secret};
use super::{Checker, Pending, RedisSecret, Target};

pub(super) fn redis(
    c: &mut Checker<'_>,
    r: &RawRedis,
    base: &Path,
    pending: &mut Vec<Pending>,
) -> RedisSettings {
    let mut secret =
        |key: &str, setting, which| maybe_secret(c, key, setting, Target::Redis(which), pending);
    let username = secret("redis.username", r.username.as_ref(), RedisSecret::Username);
    let password = secret("redis.password", r.password.as_ref(), RedisSecret::Password);
    let sentinel_username = secret(
        "redis.sentinel_username",
        r.sentinel_username.as_ref(),
        RedisSecret::SentinelUsername,
    );
    let sentinel_password = secret(
        "redis.sentinel_password",
        r.sentinel_password.as_ref(),
        RedisSecret::SentinelPassword,
    );
    let ca_file = ca_file(c, "redis.ca_file", r.ca_file.as_ref(), base);
    let wait_replicas = c.int(
        "redis.wait_replicas",
        r.wait_replicas.as_ref(),
        d::WAIT_REPLICAS,
        0..=16,
    );
    let wait_timeout = c.duration(
        "redis.wait_timeout",
        r.wait_timeout.as_ref(),
        d::WAIT_TIMEOUT,
        // Below the response timeout of the host's connections (10 s).
        Duration::from_secs(5),
    );
    RedisSettings {
        username,
        password,
        sentinel_username,
        sentinel_password,
        ca_file,
        wait_replicas: wait_replicas as u32,
        wait_timeout,
    }
}
