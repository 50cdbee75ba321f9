//! `switchyard new` for each language: the project it makes builds with its
//! one documented command, passes its own tests (the plugin run by
//! `switchyard invoke`: a chat sent, counted and announced; a CRM outage
//! retried after its Retry-After; a body that is no chat rejected), and
//! runs in a host's queue from its own queues.toml snippet: the CRM gets
//! each chat once, keyed by the message id, and the follow-up `crm.synced`
//! carries the site's count from key-value state.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use switchyard_standins::{Api, StandIn};
use switchyard_tests::projects::{componentize_py, run};
use switchyard_tests::*;

const LIMIT: Duration = Duration::from_secs(120);

/// `switchyard new <name> --lang <lang>` in a fresh folder; the project.
/// Made again where it exists, it is refused and nothing is overwritten.
fn new_project(name: &str, lang: &str) -> PathBuf {
    let project = projects::new_project(name, lang);
    let parent = project.parent().unwrap();
    // Made again where it exists: refused, nothing overwritten.
    let again = Command::new(host_binary())
        .args(["new", name, "--lang", lang])
        .current_dir(parent)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists and is not empty"));
    project
}

/// The project's queues.toml snippet, the CRM's address replaced by the
/// stand-in's, run by a host; two chats of one site and one of another.
async fn runs_in_a_queue(project: &Path, queue: &str) {
    let crm = StandIn::start(Api::Echo).await.unwrap();
    let snippet = std::fs::read_to_string(project.join("queues.toml"))
        .unwrap()
        .replace("https://crm.example.com", &crm.url());
    // A long visibility timeout: the builds beside this test starve the
    // router of CPU, and an entry it did not settle within the default
    // test second would be routed again (a legitimate repeat, but not
    // what this test counts).
    let config = format!(
        "[ingress]\nstream = \"@PREFIX@:ingress\"\nvisibility_timeout = \"60s\"\n{snippet}"
    );
    let mut host = TestHost::start(&config).await;
    let chat = std::fs::read_to_string(project.join("event.json")).unwrap();
    let mut other: Value = serde_json::from_str(&chat).unwrap();
    other["SiteId"] = 2002.into();
    host.send("chat.ended", "chat-1", &chat).await;
    host.send("chat.ended", "chat-2", &chat).await;
    host.send("chat.ended", "chat-3", &other.to_string()).await;
    host.settled(queue, 3, LIMIT).await;
    assert_eq!(host.queue(queue).succeeded, 3, "{:?}", host.queue(queue));

    let mut keys: Vec<String> = crm
        .requests()
        .iter()
        .map(|r| {
            assert_eq!(r.method, "POST");
            assert_eq!(r.path, "/chats");
            assert_eq!(r.json()["chat"], "c-8f2a");
            r.header("idempotency-key").unwrap().to_owned()
        })
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["chat-1", "chat-2", "chat-3"],
        "{:?}",
        host.queue(queue)
    );

    // The follow-ups entered the ingress, with each site's count so far
    // (they are written as each delivery settles, after it is counted).
    let ingress = host.cfg.ingress().to_owned();
    let mut conn = host.redis.conn().await;
    wait_for(LIMIT, "the three follow-ups", async || {
        entries(&mut conn, &ingress)
            .await
            .iter()
            .filter(|e| field(&e.fields, "type") == "crm.synced")
            .count()
            == 3
    })
    .await;
    let mut counts: Vec<(i64, i64)> = entries(&mut host.conn, &ingress)
        .await
        .iter()
        .filter(|e| field(&e.fields, "type") == "crm.synced")
        .map(|e| {
            let body: Value = serde_json::from_str(&field(&e.fields, "body")).unwrap();
            (
                body["SiteId"].as_i64().unwrap(),
                body["Chats"].as_i64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(counts, [(1001, 1), (1001, 2), (2002, 1)]);
    host.stop().await;
}

fn field(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> String {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_project_builds_tests_and_runs() {
    let project = new_project("crm-rust", "rust");
    // Its builds share one folder across runs of this test.
    let shared = repo_root().join("target/templates");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, project.join("target")).unwrap();
    run(
        &project,
        "cargo",
        &["build", "--release", "--target", "wasm32-wasip2"],
    );
    assert!(
        project
            .join("target/wasm32-wasip2/release/crm_rust.wasm")
            .is_file()
    );
    let tested = run(&project, "cargo", &["test"]);
    assert!(
        tested.contains("test a_chat_is_sent_counted_and_announced ... ok"),
        "{tested}"
    );
    assert!(
        tested.contains("test a_crm_outage_is_retried ... ok"),
        "{tested}"
    );
    runs_in_a_queue(&project, "CrmRust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_project_builds_tests_and_runs() {
    let project = new_project("crm-python", "python");
    componentize_py(&project, "crm_python.wasm");
    let tested = run(&project, "python3", &["-m", "unittest", "-v"]);
    assert!(tested.contains("Ran 3 tests"), "{tested}");
    python_types_check(&project);
    // A bug (len() of a number): a trap that names the exception and the
    // line, not the interpreter's traceback.
    let out = Command::new(host_binary())
        .args([
            "invoke",
            "crm_python.wasm",
            "--type",
            "chat.ended",
            "--json",
        ])
        .args(["--config", "url=https://crm.example.com/chats"])
        .args([
            "--body",
            r#"{"ChatGuid": "g", "SiteId": 1, "Start": "s", "End": "e", "Messages": 5}"#,
        ])
        .current_dir(&project)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["outcome"].as_str(), out.status.code()),
        (Some("trap"), Some(5)),
        "{report}"
    );
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "plugin trapped: uncaught TypeError: object of type 'int' has no len() (/0/app.py:"
        ),
        "{reason}"
    );
    assert!(
        !reason.contains("Traceback") && !reason.contains("panicked"),
        "{reason}"
    );
    runs_in_a_queue(&project, "CrmPython").await;
    a_new_version_compiles_only_what_changed(&project);
}

/// The project type-checks with `mypy --strict` against the kit's stubs
/// alone (no bindings generated), and a plugin that misuses the message or
/// the kit does not.
fn python_types_check(project: &Path) {
    let checked = run(project, "mypy", &["--strict", "app.py", "test_app.py"]);
    assert!(checked.contains("Success: no issues found"), "{checked}");
    let app = std::fs::read_to_string(project.join("app.py")).unwrap();
    let wrong = app
        .replace("message.message_type.lower()", "message.kind.lower()")
        .replace(
            r#"kv.increment("chats", str(chat["SiteId"]), 1)"#,
            r#"kv.increment("chats", chat["SiteId"], 1)"#,
        );
    assert_ne!(wrong, app, "the template changed: update this test");
    std::fs::write(project.join("wrong.py"), wrong).unwrap();
    let out = Command::new(repo_root().join("target/tools/python/bin/mypy"))
        .args(["--strict", "wrong.py"])
        .current_dir(project)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(r#"error: "Message" has no attribute "kind""#)
            && said.contains(
                r#"Argument 2 to "increment" of "kv" has incompatible type "int"; expected "str""#
            ),
        "{said}"
    );
    std::fs::remove_file(project.join("wrong.py")).unwrap();
}

/// The plugin type-checks (`npm run typecheck`: tsc on the JSDoc types
/// against the kit's `.d.ts`), and one that misuses the message or the kit
/// does not.
fn js_types_check(project: &Path) {
    let checked = run(project, "npm", &["run", "typecheck"]);
    assert!(!checked.contains("error"), "{checked}");
    let plugin = std::fs::read_to_string(project.join("plugin.js")).unwrap();
    let wrong = plugin
        .replace(
            "message.messageType.toLowerCase()",
            "message.kind.toLowerCase()",
        )
        .replace(
            "kv.increment('chats', String(chat.SiteId), 1)",
            "kv.increment('chats', chat.SiteId, 1)",
        );
    assert_ne!(wrong, plugin, "the template changed: update this test");
    std::fs::write(project.join("plugin.js"), wrong).unwrap();
    let out = Command::new("npm")
        .args(["run", "typecheck"])
        .current_dir(project)
        .output()
        .unwrap();
    std::fs::write(project.join("plugin.js"), plugin).unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("Property 'kind' does not exist on type 'Message'")
            && said.contains(
                "Argument of type 'number' is not assignable to parameter of type 'string'"
            ),
        "{said}"
    );
}

/// The Python kit's stub (`switchyard_kit.pyi`, what editors and mypy
/// read) names every function of the kit with its parameters, defaults and
/// types; a kit changed without its stub is caught.
#[test]
fn the_python_kit_s_stub_says_what_the_kit_does() {
    let kit = repo_root().join("kits/python/switchyard_kit.py");
    let stub = repo_root().join("kits/python/switchyard_kit.pyi");
    let checker = repo_root().join("tests/fixtures/stub_matches.py");
    let check = |module: &Path| {
        Command::new("python3")
            .arg(&checker)
            .args([module, stub.as_path()])
            .output()
            .unwrap()
    };
    let out = check(&kit);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A parameter renamed, a default, a type, a field, a kind and a
    // decorator changed in the kit alone.
    let changed = std::fs::read_to_string(&kit)
        .unwrap()
        .replace("def info(text: str)", "def info(line: str)")
        .replace("delta: int = 1)", "delta: int = 2)")
        .replace(
            "def get(bucket: str, key: str) -> Optional[bytes]",
            "def get(bucket: str, key: str) -> Optional[str]",
        )
        .replace("    status: int\n", "    status: str\n")
        .replace(
            "    def json(self) -> Any:",
            "    async def json(self) -> Any:",
        )
        .replacen(
            "    @staticmethod\n    def retry(",
            "    @classmethod\n    def retry(",
            1,
        );
    let dir = tempdir("stub-matches");
    std::fs::write(dir.join("switchyard_kit.py"), changed).unwrap();
    let out = check(&dir.join("switchyard_kit.py"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for line in [
        "log.info: parameters ['line'] != stub ['text']",
        "kv.increment(delta): default 2 != stub 1",
        "kv.get: returns Optional[str] != stub Optional[bytes]",
        "Answer.status: field str != stub int",
        "Answer.json: async def != stub def",
        "Failure.retry: decorators ['classmethod'] != stub ['staticmethod']",
    ] {
        assert!(said.contains(line), "{line} not in {said}");
    }
    // The stub's Message has the contract's fields, named as
    // componentize-py names them.
    let wit = std::fs::read_to_string(repo_root().join("wit/switchyard-plugin@0.2.0/plugin.wit"))
        .unwrap();
    let record = wit.split("record message {").nth(1).unwrap();
    let record = &record[..record.find('}').unwrap()];
    let fields: Vec<String> = record
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//") && l.contains(':'))
        .map(|l| l.split(':').next().unwrap().replace('-', "_"))
        .collect();
    assert_eq!(fields.len(), 6, "{record}");
    let stub_text = std::fs::read_to_string(&stub).unwrap();
    let message = stub_text.split("class Message:").nth(1).unwrap();
    let message = &message[..message.find("\nclass ").unwrap()];
    let stub_fields: Vec<String> = message
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .filter(|l| !l.starts_with('#') && !l.starts_with('"') && l.contains(": "))
        .map(|l| l.split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(stub_fields, fields);
}

/// Compiles the project's component in a fresh cache, changes one line of
/// `app.py`, builds and compiles again: the new version shares nearly
/// every compiled function (the interpreter) with the first, so the second
/// compile adds only a few to the function cache, and runs the new code.
fn a_new_version_compiles_only_what_changed(project: &Path) {
    let cache = tempdir("templates-function-cache");
    let invoke = |wasm: &str| {
        let out = Command::new(host_binary())
            .args([
                "invoke",
                wasm,
                "--type",
                "chat.ended",
                "--body",
                "@event.json",
            ])
            .args(["--config", "url=https://crm.example.com/chats"])
            .args(["--allow-host", "https://crm.example.com"])
            .args(["--http", "@answers.json", "--json"])
            // The function cache is Cranelift's.
            .args(["--compiler", "cranelift"])
            .env("XDG_CACHE_HOME", &cache)
            .current_dir(project)
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(report["outcome"], "success", "{report}");
        report["published"][0]["body"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    // Every entry of the function cache and its inode: an entry compiled
    // again is renamed into place, a new inode; one read is left alone.
    let functions = || -> BTreeMap<PathBuf, u64> {
        let dirs: Vec<PathBuf> = std::fs::read_dir(cache.join("switchyard"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("functions-")
            })
            .collect();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        std::fs::read_dir(&dirs[0])
            .unwrap()
            .flatten()
            .filter(|s| s.path().is_dir())
            .flat_map(|s| std::fs::read_dir(s.path()).unwrap().flatten())
            .map(|e| (e.path(), e.metadata().unwrap().ino()))
            .collect()
    };
    let first = invoke("crm_python.wasm");
    assert!(first.contains(r#""Chats": 1"#), "{first}");
    let compiled = functions();
    assert!(
        compiled.len() > 1_000,
        "{} functions cached",
        compiled.len()
    );

    let app = project.join("app.py");
    let code = std::fs::read_to_string(&app).unwrap();
    assert!(code.contains(r#""Chats": chats"#), "{code}");
    std::fs::write(
        &app,
        code.replace(r#""Chats": chats"#, r#""SiteChats": chats"#),
    )
    .unwrap();
    componentize_py(project, "v2.wasm");
    let second = invoke("v2.wasm");
    assert!(second.contains(r#""SiteChats": 1"#), "{second}");
    // Nearly every function was read from the cache, not compiled again.
    let after = functions();
    let again = compiled
        .iter()
        .filter(|(path, ino)| after.get(*path) != Some(*ino))
        .count();
    let added = after.len() - compiled.len();
    assert!(
        (again + added) * 5 < compiled.len(),
        "the second version compiled {again} functions again and {added} new ones, of {}",
        compiled.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_project_builds_tests_and_runs() {
    let project = new_project("crm-js", "js");
    // `npm install` fetches the pinned componentize-js; the one
    // scripts/setup-polyglot.sh installed is that version.
    let pinned: Value =
        serde_json::from_str(&std::fs::read_to_string(project.join("package.json")).unwrap())
            .unwrap();
    let installed: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join(
            "plugins/js-forward/node_modules/@bytecodealliance/componentize-js/package.json",
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pinned["devDependencies"]["@bytecodealliance/componentize-js"],
        installed["version"]
    );
    std::os::unix::fs::symlink(
        repo_root().join("plugins/js-forward/node_modules"),
        project.join("node_modules"),
    )
    .unwrap();
    let typescript: Value = serde_json::from_str(
        &std::fs::read_to_string(
            repo_root().join("plugins/js-forward/node_modules/typescript/package.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pinned["devDependencies"]["typescript"],
        typescript["version"]
    );
    run(&project, "npm", &["run", "build"]);
    let tested = run(&project, "npm", &["test"]);
    assert!(
        tested.contains("# pass 3") && tested.contains("# fail 0"),
        "{tested}"
    );
    js_types_check(&project);
    runs_in_a_queue(&project, "CrmJs").await;
}
