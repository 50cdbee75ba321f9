//! Checking a component against the contract before it runs.
//!
//! Linking checks a plugin's imports, and finding its exports checks their
//! names, but wasmtime checks the *types* of an export only when the host
//! first calls it. A plugin built against the right package with a `handle`
//! of another signature would pass loading and then fail every message. So
//! the type of each export the host calls is compared, at load, with the
//! type the host calls it with, both written in WIT.

use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentFunc, ComponentItem, Type};

/// An export the host calls: the interface that holds it, its name, and
/// its signature in WIT.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedExport {
    pub interface: &'static str,
    pub func: &'static str,
    pub signature: &'static str,
}

/// The `handle` of every contract version: the same type so far.
const HANDLE: &str = "func(message: record { id: string, message-type: string, queue: string, \
                      body: string, headers: list<tuple<string, string>>, attempt: u32 }) \
                      -> result<_, variant { retry(record { reason: string, delay-ms: option<u64> }), \
                      reject(string) }>";

/// What `switchyard:plugin@0.1.0` plugins export.
pub const PLUGIN_0_1: &[ExpectedExport] = &[ExpectedExport {
    interface: "switchyard:plugin/handler@0.1.0",
    func: "handle",
    signature: HANDLE,
}];

/// What `switchyard:plugin@0.2.0` plugins export.
pub const PLUGIN_0_2: &[ExpectedExport] = &[ExpectedExport {
    interface: "switchyard:plugin/handler@0.2.0",
    func: "handle",
    signature: HANDLE,
}];

/// The interfaces the host provides to plugins, by package and name; a
/// version matches when it starts with the one given (WASI 0.2.x is
/// linked by semver: a plugin built against 0.2.3 runs on 0.2.6's).
const PROVIDED: &[(&str, &str)] = &[
    ("switchyard:plugin/types", "0.1.0"),
    ("switchyard:plugin/log", "0.1.0"),
    ("switchyard:plugin/config", "0.1.0"),
    ("switchyard:plugin/messages", "0.2.0"),
    ("switchyard:plugin/log", "0.2.0"),
    ("switchyard:plugin/config", "0.2.0"),
    ("switchyard:plugin/publish", "0.2.0"),
    ("switchyard:plugin/sql", "0.2.0"),
    ("switchyard:plugin/mail", "0.2.0"),
    ("wasi:keyvalue/store", "0.2.0-draft2"),
    ("wasi:keyvalue/atomics", "0.2.0-draft2"),
    ("wasi:http/types", "0.2."),
    ("wasi:http/outgoing-handler", "0.2."),
    // WASI 0.2, linked to an empty context: the interfaces exist so that
    // language runtimes instantiate, and give no files, sockets or
    // environment.
    ("wasi:cli/", "0.2."),
    ("wasi:io/", "0.2."),
    ("wasi:clocks/", "0.2."),
    ("wasi:random/", "0.2."),
    ("wasi:filesystem/", "0.2."),
    ("wasi:sockets/", "0.2."),
];

/// What contract 0.2.0 provides, as a refusal lists it.
pub const PROVIDED_TEXT: &str = "switchyard:plugin/{messages, log, config, publish, sql, mail}@0.2.0, \
     wasi:keyvalue/{store, atomics}@0.2.0-draft2, wasi:http/{types, outgoing-handler}@0.2, \
     and WASI 0.2's cli, io, clocks, random, filesystem and sockets";

/// The interfaces a component imports, by name (`wasi:http/types@0.2.3`).
pub fn imports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// Whether the host provides an import.
pub fn provided(import: &str) -> bool {
    let (name, version) = import.split_once('@').unwrap_or((import, ""));
    PROVIDED.iter().any(|(n, v)| {
        let name_matches = if n.ends_with('/') {
            name.starts_with(n)
        } else {
            name == *n
        };
        name_matches && version.starts_with(v)
    })
}

/// A capability a queue grants: what an import needs to be of use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Http,
    KeyValue,
    Publish,
    Sql,
    Mail,
}

impl Capability {
    /// The capability an import is the way to, if any.
    pub fn of(import: &str) -> Option<Capability> {
        let name = import.split_once('@').map_or(import, |(n, _)| n);
        match name {
            "wasi:http/outgoing-handler" => Some(Capability::Http),
            "wasi:keyvalue/store" | "wasi:keyvalue/atomics" => Some(Capability::KeyValue),
            "switchyard:plugin/publish" => Some(Capability::Publish),
            "switchyard:plugin/sql" => Some(Capability::Sql),
            "switchyard:plugin/mail" => Some(Capability::Mail),
            _ => None,
        }
    }

    /// The setting of queues.toml that grants it.
    pub fn grant(self) -> &'static str {
        match self {
            Capability::Http => "allowed_hosts",
            Capability::KeyValue => "[keyvalue]",
            Capability::Publish => "publish",
            Capability::Sql => "[sql]",
            Capability::Mail => "[mail]",
        }
    }
}

/// A contract version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V0_1,
    V0_2,
}

/// The contract version a component implements (the handler interface it
/// exports), its exports checked against it.
pub fn version_of(engine: &Engine, component: &Component) -> Result<Version, ExportMismatch> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if exports.is_empty() {
        return Err(ExportMismatch::NoExports);
    }
    let has = |interface: &str| exports.iter().any(|e| e == interface);
    if has(PLUGIN_0_2[0].interface) {
        check_exports(engine, component, PLUGIN_0_2).map(|()| Version::V0_2)
    } else if has(PLUGIN_0_1[0].interface) {
        check_exports(engine, component, PLUGIN_0_1).map(|()| Version::V0_1)
    } else {
        Err(ExportMismatch::MissingInterface {
            interface: format!(
                "{} (or {})",
                PLUGIN_0_2[0].interface, PLUGIN_0_1[0].interface
            ),
            found: exports.join(", "),
        })
    }
}

/// Why a component does not export what the host calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportMismatch {
    #[error("the component exports nothing: the file is truncated, or not built as a plugin")]
    NoExports,
    #[error("no export {interface} (it exports: {found})")]
    MissingInterface { interface: String, found: String },
    #[error("{interface} has no function `{func}`")]
    MissingFunc { interface: String, func: String },
    #[error("`{func}` of {interface} has the wrong type: expected {expected}, found {found}")]
    WrongType {
        interface: String,
        func: String,
        expected: String,
        found: String,
    },
}

/// Checks that `component` exports every function of `expected` with the
/// expected type.
pub fn check_exports(
    engine: &Engine,
    component: &Component,
    expected: &[ExpectedExport],
) -> Result<(), ExportMismatch> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    if exports.is_empty() {
        return Err(ExportMismatch::NoExports);
    }
    for e in expected {
        let Some(item) = ty.get_export(engine, e.interface) else {
            return Err(ExportMismatch::MissingInterface {
                interface: e.interface.into(),
                found: exports.join(", "),
            });
        };
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            return Err(ExportMismatch::MissingInterface {
                interface: e.interface.into(),
                found: exports.join(", "),
            });
        };
        let func = match instance.get_export(engine, e.func).map(|f| f.ty) {
            Some(ComponentItem::ComponentFunc(f)) => f,
            _ => {
                return Err(ExportMismatch::MissingFunc {
                    interface: e.interface.into(),
                    func: e.func.into(),
                });
            }
        };
        let found = signature(&func);
        if normalize(&found) != normalize(e.signature) {
            return Err(ExportMismatch::WrongType {
                interface: e.interface.into(),
                func: e.func.into(),
                expected: normalize(e.signature),
                found,
            });
        }
    }
    Ok(())
}

/// Collapses runs of whitespace, so an expected signature can be written
/// across lines.
fn normalize(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A function's type in WIT.
pub fn signature(f: &ComponentFunc) -> String {
    let params: Vec<String> = f
        .params()
        .map(|(name, ty)| format!("{name}: {}", wit(&ty)))
        .collect();
    let results: Vec<String> = f.results().map(|ty| wit(&ty)).collect();
    let mut s = format!("func({})", params.join(", "));
    match results.as_slice() {
        [] => {}
        [one] => s.push_str(&format!(" -> {one}")),
        many => s.push_str(&format!(" -> ({})", many.join(", "))),
    }
    s
}

/// A value type in WIT, records and variants written out in full (they are
/// compared by structure, as the component model does).
pub fn wit(ty: &Type) -> String {
    let list = |items: Vec<String>| items.join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", wit(&l.ty())),
        Type::FixedLengthList(l) => format!("list<{}, {}>", wit(&l.ty()), l.len()),
        Type::Map(m) => format!("map<{}, {}>", wit(&m.key()), wit(&m.value())),
        Type::Record(r) => format!(
            "record {{ {} }}",
            list(
                r.fields()
                    .map(|f| format!("{}: {}", f.name, wit(&f.ty)))
                    .collect()
            )
        ),
        Type::Tuple(t) => format!("tuple<{}>", list(t.types().map(|t| wit(&t)).collect())),
        Type::Variant(v) => format!(
            "variant {{ {} }}",
            list(
                v.cases()
                    .map(|c| match c.ty {
                        Some(ty) => format!("{}({})", c.name, wit(&ty)),
                        None => c.name.to_owned(),
                    })
                    .collect()
            )
        ),
        Type::Enum(e) => format!(
            "enum {{ {} }}",
            list(e.names().map(str::to_owned).collect())
        ),
        Type::Flags(f) => format!(
            "flags {{ {} }}",
            list(f.names().map(str::to_owned).collect())
        ),
        Type::Option(o) => format!("option<{}>", wit(&o.ty())),
        Type::Result(r) => {
            let part = |t: Option<Type>| t.map_or("_".to_string(), |t| wit(&t));
            format!("result<{}, {}>", part(r.ok()), part(r.err()))
        }
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Future(f) => format!("future<{}>", f.ty().map_or("_".into(), |t| wit(&t))),
        Type::Stream(s) => format!("stream<{}>", s.ty().map_or("_".into(), |t| wit(&t))),
        Type::ErrorContext => "error-context".into(),
    }
}

#[cfg(test)]
mod import_tests {
    use super::*;

    #[test]
    fn imports_are_known_by_name_and_version() {
        for ok in [
            "switchyard:plugin/log@0.2.0",
            "switchyard:plugin/types@0.1.0",
            "wasi:http/outgoing-handler@0.2.3",
            "wasi:cli/environment@0.2.6",
            "wasi:keyvalue/store@0.2.0-draft2",
        ] {
            assert!(provided(ok), "{ok}");
        }
        for unknown in [
            "acme:crm/api@1.0.0",
            "switchyard:plugin/sql@0.1.0",
            "switchyard:plugin/queue@0.2.0",
            "wasi:http/outgoing-handler@0.3.0",
            "wasi:keyvalue/store@0.2.0-draft",
            "wasi:clix/environment@0.2.0",
        ] {
            assert!(!provided(unknown), "{unknown}");
        }
        assert_eq!(
            Capability::of("wasi:http/outgoing-handler@0.2.0"),
            Some(Capability::Http)
        );
        assert_eq!(Capability::of("wasi:http/types@0.2.0"), None);
    }
}
