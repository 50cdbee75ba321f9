//! A real browser for the dashboard's tests: headless Chromium driven
//! through chromedriver (Debian's chromium and chromium-driver) over
//! WebDriver, one session per [`Browser`], ended when dropped. Screenshots
//! are kept in `target/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{free_port, net, repo_root};

/// How long the browser waits for a page to show something.
const LIMIT: Duration = Duration::from_secs(30);

/// One WebDriver request: the status and the JSON answer.
fn webdriver(method: &str, port: u16, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let r = net::http(
        method,
        port,
        path,
        &[("Content-Type", "application/json")],
        &body,
    );
    (r.status, r.json())
}

/// A chromedriver and one browser session, ended when dropped.
#[derive(Debug)]
pub struct Browser {
    /// The chromedriver process, killed when dropped.
    driver: Child,
    /// Its WebDriver port.
    port: u16,
    session: String,
    /// Where screenshots go.
    shots: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless session.
    pub fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "chromedriver (Debian's chromium-driver; scripts/setup.sh --tests installs it)",
            );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < LIMIT, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, session) = webdriver(
            "POST",
            port,
            "/session",
            Some(&json!({ "capabilities": { "alwaysMatch": {
                "goog:chromeOptions": { "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,800", "--hide-scrollbars"
                ]},
                "goog:loggingPrefs": { "browser": "ALL" }
            }}})),
        );
        assert_eq!(status, 200, "{session}");
        let shots = repo_root().join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            port,
            session: session["value"]["sessionId"].as_str().unwrap().to_owned(),
            shots,
        }
    }

    /// One WebDriver command of the session; its `value`.
    pub fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, value) = webdriver(
            method,
            self.port,
            &format!("/session/{}{path}", self.session),
            (!body.is_null()).then_some(&body),
        );
        assert_eq!(status, 200, "{method} {path}: {value}");
        value["value"].clone()
    }

    /// Navigates to `url`.
    pub fn open(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` in the page; what it returns.
    pub fn script(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Waits until `script` returns something other than null or false.
    pub fn until(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            // An element can exist before its text is filled in: an empty
            // string is not an answer yet.
            let v = self.script(script);
            if !v.is_null() && v != Value::Bool(false) && v != Value::String(String::new()) {
                return v;
            }
            if started.elapsed() > LIMIT {
                let page = self.script(
                    "return location.hash + ': ' + document.getElementById('main').textContent",
                );
                self.screenshot("failed");
                panic!("timed out waiting for: {what}; the page shows {page}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The WebDriver id of the element `css` selects.
    pub fn element(&self, css: &str) -> String {
        let e = self.call(
            "POST",
            "/element",
            json!({ "using": "css selector", "value": css }),
        );
        e.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), json!({}));
    }

    /// Types `text` into the element `css` selects.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            json!({ "text": text }),
        );
    }

    /// Waits for a dialog (`confirm()`) and returns its text.
    pub fn alert(&self) -> String {
        let started = Instant::now();
        loop {
            let (status, value) = webdriver(
                "GET",
                self.port,
                &format!("/session/{}/alert/text", self.session),
                None,
            );
            if status == 200 {
                return value["value"].as_str().unwrap_or_default().to_owned();
            }
            assert!(started.elapsed() < LIMIT, "no dialog opened: {value}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Answers the open dialog: OK, or Cancel.
    pub fn answer_alert(&self, accept: bool) {
        let verb = if accept { "accept" } else { "dismiss" };
        self.call("POST", &format!("/alert/{verb}"), json!({}));
    }

    /// Saves the page as `target/screenshots/dashboard-<name>.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.call("GET", "/screenshot", Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"));
        let path = self.shots.join(format!("dashboard-{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// The browser's console and page errors since the last call.
    pub fn errors(&self) -> Vec<String> {
        let log = self.call("POST", "/se/log", json!({ "type": "browser" }));
        log.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = webdriver(
            "DELETE",
            self.port,
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
