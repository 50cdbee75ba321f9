//! What a queue's checks share: where they are, and the settings that
//! name a file or may come from the environment.

use std::path::Path;

use super::super::parse::join;
use super::super::raw::{MaybeSecret, Setting};
use super::super::{CaFile, IngressSettings};
use super::{Checker, FileKind, Pending, Target};

/// What a queue's checks need to know besides its table.
pub(super) struct Context<'a> {
    pub name: &'a str,
    /// `queues.<name>`.
    pub key: &'a str,
    pub base: &'a Path,
    pub ingress: &'a IngressSettings,
}

impl Context<'_> {
    pub(super) fn key(&self, part: &str) -> String {
        join(self.key, part)
    }
}

/// A CA file named, read by resolve.
pub(super) fn ca_file(
    c: &mut Checker<'_>,
    key: &str,
    setting: Option<&Setting<String>>,
    base: &Path,
) -> Option<CaFile> {
    let path = base.join(c.get(key, setting, "a path to a PEM file of CA certificates")?);
    c.file(key, path.clone(), FileKind::Ca);
    Some(CaFile {
        path,
        pem: Default::default(),
    })
}

/// A value that may be a secret: its text, or `""` and a [`Pending`] for
/// resolve to fill.
pub(super) fn maybe_secret(
    c: &mut Checker<'_>,
    key: &str,
    setting: Option<&Setting<MaybeSecret>>,
    target: Target,
    pending: &mut Vec<Pending>,
) -> Option<String> {
    let setting = setting?;
    match &setting.value {
        Ok(MaybeSecret::Text(text)) => Some(text.clone()),
        Ok(MaybeSecret::Env(env)) if !env.env.is_empty() => {
            pending.push(Pending {
                key: key.to_owned(),
                var: env.env.clone(),
                target,
            });
            Some(String::new())
        }
        Ok(MaybeSecret::Env(_)) | Err("table") => {
            c.error(
                key,
                "a secret is written { env = \"NAME\" }, NAME an environment variable",
            );
            None
        }
        Err(found) => {
            c.error(
                key,
                format!("must be a string or {{ env = \"NAME\" }}, found {found}"),
            );
            None
        }
    }
}
