//! The chat payloads' Python and TypeScript types, generated from their
//! JSON Schema (`schemas/chat-events.schema.json`, the one source of them):
//! `switchyard types --lang python|typescript`. The kits ship the output;
//! a test checks that what they ship is what this generates.

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The schema as embedded in this binary.
pub fn schema() -> Result<Value> {
    let text = super::embedded("schemas/chat-events.schema.json")?;
    serde_json::from_str(text).context("the embedded chat-events schema is not JSON")
}

/// The languages types are generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TypesLang {
    Python,
    #[value(alias = "ts")]
    Typescript,
}

pub fn generate(schema: &Value, lang: TypesLang) -> Result<String> {
    let defs = schema["$defs"]
        .as_object()
        .context("the schema has no $defs")?;
    let types = schema["messageTypes"]
        .as_object()
        .context("the schema has no messageTypes")?;
    let mut routes = Vec::new();
    for (message_type, target) in types {
        let target = target.as_str().unwrap_or_default();
        let Some(name) = target.strip_prefix("#/$defs/") else {
            bail!("messageTypes.{message_type}: {target:?} is not a #/$defs/ reference");
        };
        routes.push((message_type.as_str(), name));
    }
    let mut out = Gen {
        lang,
        text: String::new(),
    };
    out.header(schema);
    // Each definition after those it refers to: Python evaluates a
    // TypedDict's annotations when the class is made.
    let mut order = Vec::new();
    for name in defs.keys() {
        depth_first(defs, name, &mut order, &mut Vec::new())?;
    }
    for name in order {
        out.definition(name, &defs[name])?;
    }
    out.routes(&routes);
    Ok(out.text)
}

/// Puts `name` in `order` after the definitions it refers to.
fn depth_first<'a>(
    defs: &'a serde_json::Map<String, Value>,
    name: &'a str,
    order: &mut Vec<&'a str>,
    path: &mut Vec<&'a str>,
) -> Result<()> {
    if order.contains(&name) {
        return Ok(());
    }
    if path.contains(&name) {
        bail!("$defs.{name} refers to itself through {path:?}");
    }
    let def = defs
        .get(name)
        .with_context(|| format!("#/$defs/{name} is referred to but not defined"))?;
    path.push(name);
    let mut refs = Vec::new();
    references(def, &mut refs);
    for target in refs {
        let key = defs
            .keys()
            .find(|k| k.as_str() == target)
            .with_context(|| format!("#/$defs/{target} (in $defs.{name}) is not defined"))?;
        depth_first(defs, key, order, path)?;
    }
    path.pop();
    order.push(name);
    Ok(())
}

/// The `#/$defs/` names a schema value refers to.
fn references<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => {
                        out.extend(target.strip_prefix("#/$defs/"));
                    }
                    _ => references(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, out)),
        _ => {}
    }
}

struct Gen {
    lang: TypesLang,
    text: String,
}

impl Gen {
    fn line(&mut self, line: &str) {
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn header(&mut self, schema: &Value) {
        let title = schema["title"].as_str().unwrap_or("Payload types");
        match self.lang {
            TypesLang::Python => {
                self.line(&format!(
                    "\"\"\"{title}, as TypedDicts of the decoded JSON bodies."
                ));
                self.line("");
                self.line("Generated from schemas/chat-events.schema.json by");
                self.line("`switchyard types --lang python`: edit the schema, not this file.");
                self.line(
                    "A key that may be absent is NotRequired; one that may be null, Optional.",
                );
                self.line("\"\"\"");
                self.line("");
                self.line("from typing import NotRequired, Optional, TypedDict");
            }
            TypesLang::Typescript => {
                self.line(&format!("// {title}, as the decoded JSON bodies."));
                self.line("//");
                self.line("// Generated from schemas/chat-events.schema.json by");
                self.line(
                    "// `switchyard types --lang typescript`: edit the schema, not this file.",
                );
                self.line("// A property that may be absent is optional (`?`); one that may be");
                self.line("// null, `| null`. A 64-bit integer is a number: exact up to 2^53.");
            }
        }
    }

    fn doc(&mut self, indent: &str, text: Option<&str>) {
        let Some(text) = text else { return };
        match self.lang {
            TypesLang::Python => {
                self.line(&format!("{indent}\"\"\"{}\"\"\"", text.replace('"', "'")))
            }
            TypesLang::Typescript => {
                self.line(&format!("{indent}/** {} */", text.replace("*/", "* /")))
            }
        }
    }

    fn definition(&mut self, name: &str, def: &Value) -> Result<()> {
        self.line("");
        if self.lang == TypesLang::Python {
            self.line("");
        }
        let description = def["description"].as_str();
        if def["type"] != "object" {
            let ty = self.type_of(def).with_context(|| format!("$defs.{name}"))?;
            match self.lang {
                TypesLang::Python => {
                    self.line(&format!("{name} = {ty}"));
                    self.doc("", description);
                }
                TypesLang::Typescript => {
                    self.doc("", description);
                    self.line(&format!("export type {name} = {ty};"));
                }
            }
            return Ok(());
        }
        let required: Vec<&str> = def["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let properties = def["properties"]
            .as_object()
            .with_context(|| format!("$defs.{name} has no properties"))?;
        match self.lang {
            TypesLang::Python => {
                self.line(&format!("class {name}(TypedDict):"));
                self.doc("    ", description);
            }
            TypesLang::Typescript => {
                self.doc("", description);
                self.line(&format!("export interface {name} {{"));
            }
        }
        for (key, property) in properties {
            let ty = self
                .type_of(property)
                .with_context(|| format!("$defs.{name}.properties.{key}"))?;
            let needed = required.contains(&key.as_str());
            let doc = property["description"].as_str();
            match self.lang {
                TypesLang::Python => {
                    let ty = if needed {
                        ty
                    } else {
                        format!("NotRequired[{ty}]")
                    };
                    self.line(&format!("    {key}: {ty}"));
                    self.doc("    ", doc);
                }
                TypesLang::Typescript => {
                    self.doc("  ", doc);
                    let optional = if needed { "" } else { "?" };
                    self.line(&format!("  {key}{optional}: {ty};"));
                }
            }
        }
        if self.lang == TypesLang::Typescript {
            self.line("}");
        }
        Ok(())
    }

    fn type_of(&self, property: &Value) -> Result<String> {
        if let Some(target) = property["$ref"].as_str() {
            return target
                .strip_prefix("#/$defs/")
                .map(str::to_owned)
                .with_context(|| format!("{target:?} is not a #/$defs/ reference"));
        }
        let (ty, nullable) = match &property["type"] {
            Value::String(t) => (t.as_str(), false),
            Value::Array(ts) => {
                let named: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
                match named.as_slice() {
                    [t, "null"] | ["null", t] => (*t, true),
                    _ => bail!("type {named:?}: only one type, or one and null"),
                }
            }
            other => bail!("type {other}: not a type this generator knows"),
        };
        let py = self.lang == TypesLang::Python;
        let base = match ty {
            "integer" => if py { "int" } else { "number" }.to_owned(),
            "number" => if py { "float" } else { "number" }.to_owned(),
            "string" => if py { "str" } else { "string" }.to_owned(),
            "boolean" => if py { "bool" } else { "boolean" }.to_owned(),
            "array" => {
                let item = self.type_of(&property["items"])?;
                if py {
                    format!("list[{item}]")
                } else {
                    format!("{item}[]")
                }
            }
            other => bail!("type {other:?}: not a type this generator knows"),
        };
        Ok(match (nullable, py) {
            (false, _) => base,
            (true, true) => format!("Optional[{base}]"),
            (true, false) => format!("{base} | null"),
        })
    }

    fn routes(&mut self, routes: &[(&str, &str)]) {
        self.line("");
        match self.lang {
            TypesLang::Python => {
                self.line("");
                self.line("MESSAGE_TYPES: dict[str, type] = {");
                for (message_type, name) in routes {
                    self.line(&format!("    {message_type:?}: {name},"));
                }
                self.line("}");
                self.line("\"\"\"Each message type (lower case) and its payload's type.\"\"\"");
            }
            TypesLang::Typescript => {
                self.line("/** Each message type (lower case) and its payload's type. */");
                self.line("export interface MessageTypes {");
                for (message_type, name) in routes {
                    self.line(&format!("  '{message_type}': {name};"));
                }
                self.line("}");
                self.line("");
                self.line("export type MessageType = keyof MessageTypes;");
            }
        }
    }
}
