//! `switchyard new NAME --lang rust|python|js`: a plugin project that builds
//! with one command and passes its own tests (the plugin run by `switchyard
//! invoke` on a sample event), with a queues.toml snippet; and `switchyard
//! types`, the chat payloads' types for Python or TypeScript.
//!
//! Everything written comes from files embedded at build time (see
//! build.rs): the templates, the kits and the contract of this repository.

mod types;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

pub use types::TypesLang;

include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

/// An embedded file's contents.
fn embedded(name: &str) -> Result<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .with_context(|| format!("{name} is not embedded in this binary"))
}

/// The embedded files under `prefix/`, with their names below it.
fn tree(prefix: &str) -> impl Iterator<Item = (&'static str, &'static str)> {
    let prefix = format!("{prefix}/");
    FILES
        .iter()
        .filter_map(move |(n, text)| n.strip_prefix(prefix.as_str()).map(|rest| (rest, *text)))
}

/// The languages a project can be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(alias = "javascript")]
    Js,
}

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The plugin's name: lower-case letters, digits and dashes (`crm-sync`).
    name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    lang: Lang,
    /// Where to make it (default: ./NAME); must not exist or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The names a template's placeholders stand for.
struct Names {
    /// `crm-sync`: the package.
    name: String,
    /// `crm_sync`: the built file.
    snake: String,
    /// `CrmSync`: the queue.
    queue: String,
}

impl Names {
    fn of(name: &str) -> Result<Names> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && !name.ends_with('-')
            && !name.contains("--")
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            bail!(
                "{name:?} is not a plugin name: use lower-case letters, digits and single dashes, starting with a letter (crm-sync), at most 64 characters"
            );
        }
        let queue = name
            .split('-')
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        Ok(Names {
            name: name.to_owned(),
            snake: name.replace('-', "_"),
            queue,
        })
    }

    fn fill(&self, text: &str, plugin_path: &str, reuse: bool) -> String {
        let reuse = if reuse {
            "# A fresh instance of a Python or JavaScript plugin costs about a\n\
             # millisecond per message; a reused one microseconds. What one message\n\
             # leaves in the plugin's memory (globals, caches) is seen by the next.\n\
             reuse_instances = true\n"
        } else {
            ""
        };
        text.replace("{{name}}", &self.name)
            .replace("{{snake}}", &self.snake)
            .replace("{{Name}}", &self.queue)
            .replace("{{path}}", plugin_path)
            .replace("{{reuse}}\n", reuse)
    }
}

/// A project being written: its files, then written all at once.
struct Project {
    root: PathBuf,
    files: Vec<(PathBuf, String)>,
}

impl Project {
    fn add(&mut self, path: impl AsRef<Path>, text: String) {
        self.files.push((self.root.join(path), text));
    }

    fn write(self) -> Result<()> {
        for (path, text) in &self.files {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

pub fn new(args: NewArgs) -> Result<ExitCode> {
    let names = Names::of(&args.name)?;
    let root = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    if root.exists()
        && std::fs::read_dir(&root)
            .with_context(|| format!("reading {}", root.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} exists and is not empty: choose another --dir, or remove it",
            root.display()
        );
    }
    let (template, built, build, test, reuse) = match args.lang {
        Lang::Rust => (
            "rust",
            format!("target/wasm32-wasip2/release/{}.wasm", names.snake),
            "cargo build --release --target wasm32-wasip2",
            "cargo test",
            false,
        ),
        Lang::Python => (
            "python",
            format!("{}.wasm", names.snake),
            "componentize-py -d wit -w plugin componentize app -o NAME.wasm",
            "python3 -m unittest test_app",
            true,
        ),
        Lang::Js => (
            "js",
            format!("{}.wasm", names.snake),
            "npm install && npm run build",
            "npm test",
            true,
        ),
    };
    // queues.toml names the plugin by an absolute path: the snippet is
    // pasted into a host's queues.toml elsewhere.
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let absolute = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let plugin_path = absolute.join(&built).display().to_string();
    let mut project = Project {
        root: root.clone(),
        files: Vec::new(),
    };
    let fill = |text: &str| names.fill(text, &plugin_path, reuse);
    for (name, text) in tree("templates/common") {
        project.add(name, fill(text));
    }
    for (name, text) in tree(&format!("templates/{template}")) {
        project.add(name, fill(text));
    }
    let wit = match args.lang {
        Lang::Rust => "vendor/switchyard-plugin/wit",
        Lang::Python | Lang::Js => "wit",
    };
    for (name, text) in tree("wit") {
        project.add(format!("{wit}/{name}"), text.to_owned());
    }
    match args.lang {
        Lang::Rust => {
            for (name, text) in tree("rust-kit") {
                match name {
                    "Cargo.lock" => project.add(name, text.to_owned()),
                    _ => project.add(format!("vendor/switchyard-plugin/{name}"), text.to_owned()),
                }
            }
            for (name, text) in tree("chat-events") {
                project.add(format!("vendor/chat-events/{name}"), text.to_owned());
            }
            project.add(".gitignore", "/target\n".into());
        }
        Lang::Python => {
            for (name, text) in tree("kits/python") {
                project.add(name, text.to_owned());
            }
            project.add(".gitignore", "*.wasm\n__pycache__/\n".into());
        }
        Lang::Js => {
            for (name, text) in tree("kits/js") {
                if name != "package.json" {
                    project.add(format!("kit/{name}"), text.to_owned());
                }
            }
            project.add(".gitignore", "*.wasm\nnode_modules/\n".into());
        }
    }
    project.write()?;
    let build = build.replace("NAME", &names.snake);
    crate::print_out(&format!(
        "made {} ({} plugin {}, queue {}) in {}\n\n  cd {}\n  {build}\n  {test}\n\nthen add queues.toml's queue to your host's queues.toml. See README.md there.\n",
        names.name,
        template,
        built,
        names.queue,
        root.display(),
        root.display(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `switchyard types --lang L`: the chat payloads' types, on stdout.
pub fn types(lang: TypesLang) -> Result<ExitCode> {
    crate::print_out(&types::generate(&types::schema()?, lang)?)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let n = Names::of("crm-sync2").unwrap();
        assert_eq!(
            (n.snake.as_str(), n.queue.as_str()),
            ("crm_sync2", "CrmSync2")
        );
        for bad in [
            "",
            "Crm",
            "2crm",
            "crm-",
            "crm--sync",
            "crm_sync",
            "crm sync",
            "../x",
        ] {
            assert!(Names::of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_template_and_kit_is_embedded() {
        for name in [
            "templates/rust/Cargo.toml",
            "templates/python/app.py",
            "templates/js/plugin.js",
            "templates/common/queues.toml",
            "kits/python/switchyard_kit.py",
            "kits/js/switchyard-kit.js",
            "wit/plugin.wit",
            "wit/deps/http.wit",
            "rust-kit/src/lib.rs",
            "chat-events/src/lib.rs",
        ] {
            assert!(embedded(name).is_ok(), "{name}");
        }
    }

    /// The kits ship the types generated from the schema, unchanged.
    #[test]
    fn the_kits_payload_types_are_the_schema_s() {
        let schema = types::schema().unwrap();
        for (lang, shipped) in [
            (TypesLang::Python, "kits/python/chat_events.py"),
            (TypesLang::Typescript, "kits/js/chat-events.d.ts"),
        ] {
            let generated = types::generate(&schema, lang).unwrap();
            assert!(
                embedded(shipped).unwrap() == generated,
                "{shipped} is not what the schema generates: switchyard types --lang {lang:?} > {shipped}"
            );
        }
    }
}
