//! The Python and JavaScript kits' SQL and mail helpers, in plugins built
//! from `switchyard new` projects (componentize-py, componentize-js) and
//! run by `switchyard invoke` against a real PostgreSQL and an SMTP
//! receiver: rows written in a transaction and read back by column name
//! with every type, a mail sent; each error mapped to the outcome the Rust
//! kit gives it (a constraint rejects, a missing table or database waits a
//! minute for the operator, a bad address rejects), and a transaction a
//! failure left rolled back.

use std::time::Duration;

use serde_json::Value;
use switchyard_standins::postgres::Postgres;
use switchyard_standins::smtp::SmtpReceiver;
use switchyard_tests::projects::{componentize_py, new_project, run};
use switchyard_tests::*;

const PYTHON_APP: &str = r#"
import json

from switchyard_kit import Failure, export, mail, sql


class Plugin:
    def handle(self, message):
        body = json.loads(message.body)
        guid = body["guid"]
        if body["do"] == "save":
            with sql.transaction():
                sql.execute(
                    "INSERT INTO chats (guid, messages, note, raw) VALUES ($1, $2, $3, $4)",
                    [guid, body["messages"], None, b"\x00\x01"],
                    what="saving the chat",
                )
                rows = sql.query(
                    "SELECT guid, messages, note, raw, messages > 3 AS long FROM chats WHERE guid = $1",
                    [guid],
                )
            row = rows[0]
            mail.send(
                "Support <support@example.com>",
                body["to"],
                f"chat {row['guid']}",
                text=f"{row['messages']} messages, note {row['note']}, raw {row['raw']!r}, long {row['long']}",
                headers={"Message-ID": f"<{message.id}@example.com>"},
            )
        elif body["do"] == "abandon":
            with sql.transaction():
                sql.execute("INSERT INTO chats (guid, messages) VALUES ($1, 0)", [guid])
                raise Failure.reject("abandoned on purpose")
        elif body["do"] == "missing":
            sql.query("SELECT * FROM nowhere WHERE guid = $1", [guid], what="reading nowhere")


Handler = export(Plugin)
"#;

const JS_APP: &str = r#"
import { Failure, exportHandler, mail, sql } from './kit/switchyard-kit.js';

export const handler = exportHandler(async (message) => {
  const body = JSON.parse(message.body);
  const guid = body.guid;
  if (body.do === 'save') {
    const rows = await sql.transaction(() => {
      sql.execute(
        'INSERT INTO chats (guid, messages, note, raw) VALUES ($1, $2, $3, $4)',
        [guid, body.messages, null, new Uint8Array([0, 1])],
        'saving the chat',
      );
      return sql.query(
        'SELECT guid, messages, note, raw, messages > 3 AS long FROM chats WHERE guid = $1',
        [guid],
      );
    });
    const row = rows[0];
    mail.send({
      from: 'Support <support@example.com>',
      to: body.to,
      subject: `chat ${row.guid}`,
      text: `${row.messages} messages, note ${row.note}, raw ${Array.from(row.raw)}, long ${row.long}`,
      headers: { 'Message-ID': `<${message.id}@example.com>` },
    });
  } else if (body.do === 'abandon') {
    await sql.transaction(() => {
      sql.execute('INSERT INTO chats (guid, messages) VALUES ($1, 0)', [guid]);
      throw Failure.reject('abandoned on purpose');
    });
  } else if (body.do === 'missing') {
    sql.query('SELECT * FROM nowhere WHERE guid = $1', [guid], 'reading nowhere');
  }
});
"#;

/// `switchyard invoke` of the plugin on `body`, with `args`; its report and
/// exit status.
fn invoke_in(project: &std::path::Path, wasm: &str, body: &str, args: &[&str]) -> (Value, i32) {
    let out = std::process::Command::new(host_binary())
        .args(["invoke", wasm, "--type", "chat.ended", "--json"])
        .args(["--body", body])
        .args(args)
        .current_dir(project)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
    });
    (report, out.status.code().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_kit_runs_sql_and_sends_mail_with_the_rust_kit_s_outcomes() {
    let project = new_project("kit-python", "python");
    std::fs::write(project.join("app.py"), PYTHON_APP).unwrap();
    componentize_py(&project, "kit.wasm");
    sql_and_mail(&project, "kit.wasm", ["None", "b'\\x00\\x01'", "True"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_kit_runs_sql_and_sends_mail_with_the_rust_kit_s_outcomes() {
    let project = new_project("kit-js", "js");
    std::fs::write(project.join("plugin.js"), JS_APP).unwrap();
    std::os::unix::fs::symlink(
        repo_root().join("plugins/js-forward/node_modules"),
        project.join("node_modules"),
    )
    .unwrap();
    run(&project, "npm", &["run", "build"]);
    sql_and_mail(&project, "kit_js.wasm", ["null", "0,1", "true"]).await;
}

/// The plugin `wasm` of `project`, built from the app above, on each case;
/// `printed` is how its language prints a null, the bytes 0 and 1, and
/// true.
async fn sql_and_mail(project: &std::path::Path, wasm: &str, printed: [&str; 3]) {
    let pg = Postgres::start("chat").unwrap();
    pg.psql(
        "CREATE TABLE chats (guid text PRIMARY KEY, messages int NOT NULL, note text, raw bytea)",
    );
    let smtp = SmtpReceiver::start().await.unwrap();
    let project = &project.to_owned();
    let invoke = |body: &str, args: &[&str]| invoke_in(project, wasm, body, args);
    let (sql_url, smtp_url) = (pg.url(), smtp.url());
    let granted = ["--sql-url", &sql_url, "--smtp-url", &smtp_url];

    // Written, read back as a dict with every type, and mailed.
    let (r, code) = invoke(
        r#"{"do": "save", "guid": "g-1", "messages": 5, "to": "visitor@example.com"}"#,
        &granted,
    );
    assert_eq!((r["outcome"].as_str(), code), (Some("success"), 0), "{r}");
    assert_eq!(pg.psql("SELECT guid, messages FROM chats").trim(), "g-1|5");
    assert_eq!(smtp.wait_mails(1, Duration::from_secs(10)).await, 1);
    let m = &smtp.mails()[0];
    assert_eq!(m.to, ["visitor@example.com"]);
    assert_eq!(m.header("Subject").as_deref(), Some("chat g-1"));
    let text = m.part("text/plain").unwrap_or_default();
    let [none, raw, long] = printed;
    assert!(
        text.contains(&format!("5 messages, note {none}, raw {raw}, long {long}")),
        "{}",
        m.data
    );

    // The same chat again: a unique violation, the data refused.
    let (r, code) = invoke(
        r#"{"do": "save", "guid": "g-1", "messages": 5, "to": "visitor@example.com"}"#,
        &granted,
    );
    assert_eq!((r["outcome"].as_str(), code), (Some("reject"), 4), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("saving the chat: duplicate key value"),
        "{r}"
    );
    assert!(
        r["reason"].as_str().unwrap().contains("(SQLSTATE 23505)"),
        "{r}"
    );

    // A failure inside the transaction: rejected, and nothing written.
    let (r, code) = invoke(r#"{"do": "abandon", "guid": "g-2"}"#, &granted);
    assert_eq!((r["outcome"].as_str(), code), (Some("reject"), 4), "{r}");
    assert_eq!(r["reason"], "abandoned on purpose", "{r}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM chats WHERE guid = 'g-2'")
            .trim(),
        "0"
    );

    // A missing table: the operator's to fix, retried after a minute.
    let (r, code) = invoke(r#"{"do": "missing", "guid": "g-3"}"#, &granted);
    assert_eq!((r["outcome"].as_str(), code), (Some("retry"), 3), "{r}");
    assert_eq!(r["delay_ms"], 60_000, "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .starts_with("reading nowhere: relation \"nowhere\" does not exist (SQLSTATE 42P01)"),
        "{r}"
    );

    // No database granted: the same.
    let (r, code) = invoke(r#"{"do": "missing", "guid": "g-3"}"#, &[]);
    assert_eq!((r["outcome"].as_str(), code), (Some("retry"), 3), "{r}");
    assert_eq!(r["delay_ms"], 60_000, "{r}");
    assert_eq!(
        r["reason"], "reading nowhere: the queue has no database (queues.<name>.sql)",
        "{r}"
    );

    // A recipient that is no address: the mail is refused for good.
    let (r, code) = invoke(
        r#"{"do": "save", "guid": "g-4", "messages": 1, "to": "not an address"}"#,
        &granted,
    );
    assert_eq!((r["outcome"].as_str(), code), (Some("reject"), 4), "{r}");
    assert!(
        r["reason"].as_str().unwrap().starts_with("sending mail: "),
        "{r}"
    );
    assert_eq!(smtp.mails().len(), 1, "nothing more was sent");
}
