//! The I/O of reading queues.toml, and only what a command [`Needs`]:
//! secrets from the environment, CA files and the admin server's
//! certificate and key (read with a bound), migration folders and plugin
//! files checked to exist; then what can only be checked once the secrets'
//! values are known (a database URL's form, a relay's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::parse::Lines;
use super::validate::{FileKind, FileRef, Pending, RedisSecret, Target, Validated};
use super::{Config, ConfigError, Needs, Secret, SmtpRelay};

/// The largest CA file read: a bundle of every public root is about 200 KiB.
const MAX_CA_FILE_BYTES: u64 = 1 << 20;
/// The largest private key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// The model resolved, and what went wrong.
#[derive(Debug)]
pub struct Resolved {
    pub config: Config,
    pub errors: Vec<ConfigError>,
}

struct Resolver<'a> {
    lines: &'a Lines,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Resolver<'_> {
    fn problem(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            key: key.to_owned(),
            line: self.lines.of(key),
            message: message.into(),
        }
    }

    fn error(&mut self, key: &str, message: impl Into<String>) {
        let e = self.problem(key, message);
        self.errors.push(e);
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        let w = self.problem(key, message);
        self.warnings.push(w);
    }
}

/// Why a CA file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct BadCaFile {
    pub path: std::path::PathBuf,
    #[source]
    pub problem: CaProblem,
}

/// What is wrong with a CA file.
#[derive(Debug, thiserror::Error)]
pub enum CaProblem {
    #[error(transparent)]
    Read(#[from] crate::files::ReadError),
    #[error("not PEM certificates: {0}")]
    NotPem(rustls::pki_types::pem::Error),
    #[error("holds no certificate (-----BEGIN CERTIFICATE-----)")]
    Empty,
    #[error(transparent)]
    Refused(#[from] rustls::Error),
}

/// Reads `path` as a file of CA certificates.
pub fn read_ca(path: &Path) -> Result<Arc<[u8]>, BadCaFile> {
    let bad = |problem: CaProblem| BadCaFile {
        path: path.to_owned(),
        problem,
    };
    let pem = crate::files::read(path, MAX_CA_FILE_BYTES).map_err(|e| bad(e.into()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(CaProblem::NotPem(e)))?;
    if certificates.is_empty() {
        return Err(bad(CaProblem::Empty));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots.add(certificate).map_err(|e| bad(e.into()))?;
    }
    Ok(pem.into())
}

/// The password of a URL (`scheme://user:password@host`), if it has one.
pub fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then(|| password.to_owned())
}

/// The default cache folder: `$XDG_CACHE_HOME/switchyard`, else
/// `~/.cache/switchyard`.
fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("switchyard"))
}

pub fn resolve(
    validated: Validated,
    lines: &Lines,
    env: &dyn Fn(&str) -> Option<String>,
    needs: Needs,
) -> Resolved {
    let Validated {
        mut config,
        pending,
        files,
        default_cache_dir: default_cache,
        ..
    } = validated;
    let mut r = Resolver {
        lines,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    if default_cache {
        config.host.cache_dir = default_cache_dir();
    }
    let read = read_files(&mut r, &files, needs);
    let contents = |key: &str| read.get(key).cloned().unwrap_or_default();
    let secret = |name: &str| {
        if needs.secrets {
            env(name).filter(|t| !t.is_empty())
        } else {
            None
        }
    };
    if let Some(admin) = &mut config.admin {
        let token = |var: &str| {
            secret(var).map(|value| Secret {
                key: "admin".into(),
                env: var.into(),
                value,
            })
        };
        admin.token = token("SWITCHYARD_ADMIN_TOKEN");
        admin.read_token = token("SWITCHYARD_ADMIN_READ_TOKEN");
        if let Some(tls) = &mut admin.tls {
            tls.cert_pem = contents("admin.tls_cert");
            tls.key_pem = contents("admin.tls_key");
        }
    }
    if let Some(ca) = &mut config.redis.ca_file {
        ca.pem = contents("redis.ca_file");
    }
    fill_redis(&mut r, &mut config, &pending, env, needs);
    fill_secrets(&mut r, &mut config, &pending, &secret, needs);
    for q in config.queues.values_mut() {
        let key = |part: &str| super::parse::join(&super::parse::join("queues", &q.name), part);
        if let Some(ca) = &mut q.http.ca_file {
            ca.pem = contents(&key("http_ca_file"));
        }
        if let Some(sql) = &mut q.sql {
            let key = |part: &str| super::parse::join(&key("sql"), part);
            if let Some(ca) = &mut sql.ca_file {
                ca.pem = contents(&key("ca_file"));
            }
            check_database_url(&mut r, &key("database_url"), &key("ca_file"), sql);
        }
        if let Some(mail) = &mut q.mail {
            let key = |part: &str| super::parse::join(&key("mail"), part);
            if let Some(ca) = &mut mail.ca_file {
                ca.pem = contents(&key("ca_file"));
            }
            if !mail.smtp_url.is_empty() {
                let scheme = mail.smtp_url.split_once("://").map(|(s, _)| s);
                if !matches!(scheme, Some("smtp" | "smtps")) {
                    r.error(
                        &key("smtp_url"),
                        "must be smtp://host:port (add ?tls=required for STARTTLS) or smtps://host:port",
                    );
                } else {
                    match SmtpRelay::parse(
                        &mail.smtp_url,
                        mail.username.as_deref(),
                        mail.password.as_deref(),
                    ) {
                        Err(e) => r.error(&key("smtp_url"), format!("is not an SMTP URL: {e}")),
                        Ok(relay) if relay.credentials_in_clear() => r.error(
                            &key("smtp_url"),
                            "would send the relay's credentials without TLS (the relay is not on loopback): add ?tls=required for STARTTLS, or use smtps://",
                        ),
                        Ok(_) => {}
                    }
                }
            }
        }
    }
    config.warnings.append(&mut r.warnings);
    Resolved {
        config,
        errors: r.errors,
    }
}

/// Reads or checks every file the configuration names that `needs` asks
/// for, whether or not the rest of its section was valid; returns what
/// was read, by key.
fn read_files(
    r: &mut Resolver<'_>,
    files: &[FileRef],
    needs: Needs,
) -> BTreeMap<String, Arc<[u8]>> {
    let mut read = BTreeMap::new();
    for f in files {
        let path = &f.path;
        match f.kind {
            FileKind::Plugin if needs.plugins => {
                if path.exists() && !path.is_file() {
                    r.error(&f.key, format!("{} is not a regular file", path.display()));
                } else if !path.is_file() {
                    // The shipped queues.toml names the plugins this
                    // repository builds.
                    let hint = if path.to_string_lossy().contains("wasm32-wasip2") {
                        " (build the shipped plugins with ./scripts/build-plugins.sh)"
                    } else {
                        ""
                    };
                    r.error(
                        &f.key,
                        format!("plugin file {} does not exist{hint}", path.display()),
                    );
                }
            }
            FileKind::Ca if needs.files || (needs.redis && f.key.starts_with("redis.")) => {
                match read_ca(path) {
                    Ok(pem) => {
                        read.insert(f.key.clone(), pem);
                    }
                    Err(e) => r.error(&f.key, e.to_string()),
                }
            }
            FileKind::Folder if needs.files && !path.is_dir() => {
                r.error(&f.key, format!("{} is not a folder", path.display()));
            }
            FileKind::AdminCert | FileKind::AdminKey if needs.files => {
                let max = if f.kind == FileKind::AdminKey {
                    MAX_KEY_FILE_BYTES
                } else {
                    MAX_CA_FILE_BYTES
                };
                match crate::files::read(path, max) {
                    Ok(pem) => {
                        read.insert(f.key.clone(), pem.into());
                    }
                    Err(e) => r.error(&f.key, format!("{}: {e}", path.display())),
                }
                if f.kind == FileKind::AdminKey
                    && let Ok(meta) = std::fs::metadata(path)
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o077 != 0
                {
                    r.warn(
                        &f.key,
                        format!(
                            "{} can be read by other users than its owner (chmod 600 it)",
                            path.display()
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    read
}

/// Reads each value from the environment into its setting, and lists the
/// queues' secrets (to mask): every value from the environment, and every
/// database or relay URL and credential, however written.
fn fill_secrets(
    r: &mut Resolver<'_>,
    config: &mut Config,
    pending: &[Pending],
    secret: &dyn Fn(&str) -> Option<String>,
    needs: Needs,
) {
    for p in pending {
        if matches!(p.target, Target::Redis(_)) {
            continue;
        }
        let value = match secret(&p.var) {
            Some(v) => v,
            None if needs.secrets => {
                r.error(
                    &p.key,
                    format!(
                        "the environment variable {} is not set (or not UTF-8)",
                        p.var
                    ),
                );
                continue;
            }
            // `status` reads no secrets: the settings stay empty.
            None => continue,
        };
        let queue_name = match &p.target {
            Target::PluginConfig { queue, .. }
            | Target::DatabaseUrl(queue)
            | Target::SmtpUrl(queue)
            | Target::MailUser(queue)
            | Target::MailPassword(queue) => queue,
            Target::Redis(_) => continue,
        };
        let Some(q) = config.queues.get_mut(queue_name) else {
            continue;
        };
        match &p.target {
            Target::PluginConfig { name, .. } => {
                q.plugin_config
                    .insert(name.clone(), serde_json::Value::String(value.clone()));
                q.secrets.push(Secret {
                    key: name.clone(),
                    env: p.var.clone(),
                    value,
                });
            }
            Target::DatabaseUrl(_) => {
                if let Some(sql) = &mut q.sql {
                    sql.database_url = value;
                }
            }
            Target::SmtpUrl(_) => {
                if let Some(mail) = &mut q.mail {
                    mail.smtp_url = value;
                }
            }
            Target::MailUser(_) => {
                if let Some(mail) = &mut q.mail {
                    mail.username = Some(value);
                }
            }
            Target::MailPassword(_) => {
                if let Some(mail) = &mut q.mail {
                    mail.password = Some(value);
                }
            }
            Target::Redis(_) => {}
        }
    }
    for q in config.queues.values_mut() {
        let queue_key = super::parse::join("queues", &q.name);
        let env_of = |key: &str| {
            pending
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.var.clone())
                .unwrap_or_default()
        };
        let mut found = Vec::new();
        if let Some(sql) = &q.sql {
            found.push((
                "database_url",
                format!("{queue_key}.sql.database_url"),
                sql.database_url.clone(),
            ));
        }
        if let Some(mail) = &q.mail {
            found.push((
                "smtp_url",
                format!("{queue_key}.mail.smtp_url"),
                mail.smtp_url.clone(),
            ));
            if let Some(u) = &mail.username {
                found.push(("username", format!("{queue_key}.mail.username"), u.clone()));
            }
            if let Some(p) = &mail.password {
                found.push(("password", format!("{queue_key}.mail.password"), p.clone()));
            }
        }
        for (name, key, value) in found {
            if value.is_empty() {
                if needs.secrets {
                    r.warn(&key, "is empty");
                }
                continue;
            }
            let env = env_of(&key);
            if let Some(password) = url_password(&value) {
                q.secrets.push(Secret {
                    key: format!("{name} (password)"),
                    env: env.clone(),
                    value: password,
                });
            }
            q.secrets.push(Secret {
                key: name.to_owned(),
                env,
                value,
            });
        }
    }
}

/// Reads `[redis]`'s credentials from the environment, when the command
/// reaches Redis.
fn fill_redis(
    r: &mut Resolver<'_>,
    config: &mut Config,
    pending: &[Pending],
    env: &dyn Fn(&str) -> Option<String>,
    needs: Needs,
) {
    for p in pending {
        let Target::Redis(which) = p.target else {
            continue;
        };
        if !needs.redis {
            continue;
        }
        let Some(value) = env(&p.var).filter(|v| !v.is_empty()) else {
            r.error(
                &p.key,
                format!(
                    "the environment variable {} is not set (or not UTF-8)",
                    p.var
                ),
            );
            continue;
        };
        let redis = &mut config.redis;
        let field = match which {
            RedisSecret::Username => &mut redis.username,
            RedisSecret::Password => &mut redis.password,
            RedisSecret::SentinelUsername => &mut redis.sentinel_username,
            RedisSecret::SentinelPassword => &mut redis.sentinel_password,
        };
        *field = Some(value);
    }
}

/// A database URL's form, and its `sslmode` against its `ca_file`.
fn check_database_url(r: &mut Resolver<'_>, key: &str, ca_key: &str, sql: &super::SqlSettings) {
    if sql.database_url.is_empty() {
        return;
    }
    match sql.database_url.parse::<tokio_postgres::Config>() {
        Err(_) if sql.database_url.contains("sslmode=verify-") => r.error(
            key,
            "sslmode: write sslmode=require; the host always verifies the server's certificate and name (as verify-full does)",
        ),
        Err(e) => r.error(
            key,
            format!("is not a PostgreSQL URL (postgres://user:password@host:port/database): {e}"),
        ),
        Ok(pg) => {
            if sql.ca_file.is_some()
                && pg.get_ssl_mode() != tokio_postgres::config::SslMode::Require
            {
                r.error(
                    ca_key,
                    "is set, but database_url does not ask for TLS (add ?sslmode=require)",
                );
            }
        }
    }
}
