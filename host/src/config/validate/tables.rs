//! The host-wide tables: `[host]`, `[ingress]`, `[retention]` and
//! `[admin]`.

use std::path::Path;
use std::time::Duration;

use super::super::defaults as d;
use super::super::raw::{RawAdmin, RawHost, RawIngress, RawRetention};
use super::super::{
    AdminSettings, AdminTls, HostSettings, IngressSettings, MAX_DURATION, MAX_ENTRY_KIB,
    MissingGroup, RetentionSettings,
};
use super::{Checker, FileKind};

pub(super) fn host(c: &mut Checker<'_>, h: &RawHost, base: &Path) -> (HostSettings, bool) {
    let prefix = c
        .get("host.prefix", h.prefix.as_ref(), "a string")
        .cloned()
        .unwrap_or_else(|| d::PREFIX.into());
    if prefix.is_empty() || prefix.contains(char::is_whitespace) {
        c.error("host.prefix", "must be non-empty and without spaces");
    } else if prefix.contains(['{', '}']) {
        c.error(
            "host.prefix",
            "must not contain '{' or '}': the host adds its own hash tags (Redis Cluster slots) to key names",
        );
    }
    let shutdown_timeout = c.duration(
        "host.shutdown_timeout",
        h.shutdown_timeout.as_ref(),
        d::SHUTDOWN_TIMEOUT,
        Duration::from_secs(3600),
    );
    let (cache_dir, default_cache_dir) = match c.get(
        "host.cache_dir",
        h.cache_dir.as_ref(),
        "a path (\"\" turns the cache off)",
    ) {
        Some(dir) if dir.is_empty() => (None, false),
        Some(dir) => (Some(base.join(dir)), false),
        None => (None, h.cache_dir.is_none()),
    };
    let plugin_compile_timeout = c.duration(
        "host.plugin_compile_timeout",
        h.plugin_compile_timeout.as_ref(),
        d::PLUGIN_COMPILE_TIMEOUT,
        Duration::from_secs(3600),
    );
    let plugin_compile_memory_mib = c.int(
        "host.plugin_compile_memory_mib",
        h.plugin_compile_memory_mib.as_ref(),
        d::PLUGIN_COMPILE_MEMORY_MIB,
        256..=65536,
    );
    let max_plugin_mib = c.int(
        "host.max_plugin_mib",
        h.max_plugin_mib.as_ref(),
        d::MAX_PLUGIN_MIB,
        1..=4096,
    );
    let on_missing_group = match c
        .get(
            "host.on_missing_group",
            h.on_missing_group.as_ref(),
            "\"recreate\" or \"stop\"",
        )
        .map(String::as_str)
    {
        None | Some("recreate") => MissingGroup::Recreate,
        Some("stop") => MissingGroup::Stop,
        Some(other) => {
            c.error(
                "host.on_missing_group",
                format!("must be \"recreate\" or \"stop\", found {other:?}"),
            );
            MissingGroup::Recreate
        }
    };
    (
        HostSettings {
            prefix,
            shutdown_timeout,
            cache_dir,
            plugin_compile_timeout,
            plugin_compile_memory_mib: plugin_compile_memory_mib as u32,
            max_plugin_bytes: max_plugin_mib as u64 * 1024 * 1024,
            on_missing_group,
        },
        default_cache_dir,
    )
}

pub(super) fn ingress(c: &mut Checker<'_>, i: &RawIngress) -> IngressSettings {
    let stream = c
        .get("ingress.stream", i.stream.as_ref(), "a string")
        .cloned()
        .unwrap_or_else(|| d::INGRESS_STREAM.into());
    if stream.is_empty() {
        c.error("ingress.stream", "must not be empty");
    } else if stream.contains(['{', '}']) {
        c.error(
            "ingress.stream",
            "must not contain '{' or '}': the host adds its own hash tags (Redis Cluster slots) to key names",
        );
    }
    let batch = c.int(
        "ingress.batch",
        i.batch.as_ref(),
        d::INGRESS_BATCH,
        1..=10_000,
    );
    let visibility_timeout = c.duration(
        "ingress.visibility_timeout",
        i.visibility_timeout.as_ref(),
        d::INGRESS_VISIBILITY_TIMEOUT,
        MAX_DURATION,
    );
    let max_entry_kib = c.int(
        "ingress.max_entry_kib",
        i.max_entry_kib.as_ref(),
        d::MAX_ENTRY_KIB,
        1..=MAX_ENTRY_KIB as i64,
    );
    let partitions = c.int(
        "ingress.partitions",
        i.partitions.as_ref(),
        d::INGRESS_PARTITIONS,
        1..=crate::config::MAX_PARTITIONS as i64,
    );
    IngressSettings {
        stream,
        batch: batch as usize,
        visibility_timeout,
        max_entry_bytes: max_entry_kib as usize * 1024,
        partitions: partitions as usize,
    }
}

pub(super) fn retention(c: &mut Checker<'_>, r: &RawRetention) -> RetentionSettings {
    // Retention may be long: ten years.
    let long = MAX_DURATION * 10;
    RetentionSettings {
        interval: c.duration(
            "retention.interval",
            r.interval.as_ref(),
            d::RETENTION_INTERVAL,
            Duration::from_secs(24 * 3600),
        ),
        keep_handled: c.duration(
            "retention.keep_handled",
            r.keep_handled.as_ref(),
            d::KEEP_HANDLED,
            long,
        ),
        dead_letter_age: c.duration(
            "retention.dead_letter_age",
            r.dead_letter_age.as_ref(),
            d::DEAD_LETTER_AGE,
            long,
        ),
        dead_letter_max_len: c.int(
            "retention.dead_letter_max_len",
            r.dead_letter_max_len.as_ref(),
            d::DEAD_LETTER_MAX_LEN,
            0..=i64::MAX,
        ) as u64,
        idle_consumer: c.duration(
            "retention.idle_consumer",
            r.idle_consumer.as_ref(),
            d::IDLE_CONSUMER,
            long,
        ),
    }
}

pub(super) fn admin(c: &mut Checker<'_>, a: &RawAdmin, base: &Path) -> AdminSettings {
    let listen = match c.get(
        "admin.listen",
        a.listen.as_ref(),
        "an address, e.g. \"127.0.0.1:9464\"",
    ) {
        None => d::ADMIN_LISTEN,
        Some(text) => match text.parse::<std::net::SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() {
                    c.warn(
                        "admin.listen",
                        "is not a loopback address: /metrics, /healthz and /readyz are open to that network (the dashboard and its API need a token)",
                    );
                }
                addr
            }
            Err(_) => {
                c.error(
                    "admin.listen",
                    format!("{text:?} is not an address and port, e.g. \"127.0.0.1:9464\""),
                );
                d::ADMIN_LISTEN
            }
        },
    };
    let stats_interval = c.duration(
        "admin.stats_interval",
        a.stats_interval.as_ref(),
        d::STATS_INTERVAL,
        Duration::from_secs(600),
    );
    let cert = c.get(
        "admin.tls_cert",
        a.tls_cert.as_ref(),
        "a path to a PEM certificate chain",
    );
    let key = c.get(
        "admin.tls_key",
        a.tls_key.as_ref(),
        "a path to a PEM private key",
    );
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(_), None) => {
            c.error("admin.tls_key", "is needed with tls_cert");
            None
        }
        (None, Some(_)) => {
            c.error("admin.tls_cert", "is needed with tls_key");
            None
        }
        (Some(cert), Some(key)) => {
            let (cert, key) = (base.join(cert), base.join(key));
            c.file("admin.tls_cert", cert.clone(), FileKind::AdminCert);
            c.file("admin.tls_key", key.clone(), FileKind::AdminKey);
            Some(AdminTls {
                cert,
                key,
                cert_pem: Default::default(),
                key_pem: Default::default(),
            })
        }
    };
    let hosts = c
        .get(
            "admin.hosts",
            a.hosts.as_ref(),
            "an array of host names, e.g. [\"switchyard.internal\"]",
        )
        .cloned()
        .unwrap_or_default();
    for h in &hosts {
        if crate::grants::request_host(h).is_err() || h.contains(':') {
            c.error(
                "admin.hosts",
                format!("{h:?} is not a host name (write the name alone, without scheme or port)"),
            );
        }
    }
    AdminSettings {
        listen,
        stats_interval,
        tls,
        hosts: hosts
            .iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect(),
        token: None,
        read_token: None,
    }
}
