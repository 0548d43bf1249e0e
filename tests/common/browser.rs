//! Headless Chromium driven over the DevTools protocol, for the tests of the pages the servers
//! serve: open a page at a viewport size, evaluate JavaScript in it, wait for what it shows,
//! click, and save screenshots.
//!
//! Chromium is started with `--remote-debugging-port=0` and a fresh profile directory; the port
//! it picked is read from `DevToolsActivePort` in that directory. Commands go over one
//! WebSocket to the browser, to the page's session (`Target.attachToTarget` with `flatten`).

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

use super::TempDir;

/// How long a page may take to show what a test waits for.
const PAGE_WAIT: Duration = Duration::from_secs(30);

/// The Chromium binary Debian installs.
pub const CHROMIUM: &str = "chromium";

/// True when Chromium can run here.
pub fn available() -> bool {
    super::runs(CHROMIUM, "--version")
}

/// One headless Chromium with one page.
pub struct Browser {
    child: Child,
    ws: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium and opens a blank page `width`×`height` CSS pixels.
    pub fn launch(width: u32, height: u32) -> Browser {
        let profile = TempDir::new("chromium");
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let file = profile.path("DevToolsActivePort");
        let deadline = Instant::now() + PAGE_WAIT;
        let (port, path) = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break (port.trim().to_string(), path.trim().to_string());
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("devtools port");
        stream.set_read_timeout(Some(PAGE_WAIT)).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("devtools websocket");
        let mut b = Browser {
            child,
            ws,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("targetId").to_string();
        let attached = b.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        b.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        b.viewport(width, height);
        b
    }

    /// Sends one command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{method} failed: {e}"))
    }

    /// [`Browser::call`], with the protocol's error given back.
    fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .expect("send to chromium");
        loop {
            let text = match self.ws.read().expect("read from chromium") {
                Message::Text(t) => t,
                _ => continue,
            };
            let v: Value = serde_json::from_str(text.as_str()).expect("devtools JSON");
            if v["id"].as_u64() != Some(id) {
                continue; // an event, or another session's answer
            }
            if let Some(e) = v.get("error") {
                return Err(e.to_string());
            }
            return Ok(v["result"].clone());
        }
    }

    /// Sets the page's size in CSS pixels (a width under 600 also makes it a phone).
    pub fn viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width, "height": height, "deviceScaleFactor": 1,
                "mobile": width < 600,
            }),
        );
    }

    /// Loads `url`.
    pub fn open(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// The value of the JavaScript expression `js` (promises awaited).
    pub fn eval(&mut self, js: &str) -> Value {
        self.try_eval(js).unwrap_or_else(|e| panic!("{js}: {e}"))
    }

    /// [`Browser::eval`], with what went wrong given back (e.g. while a page loads).
    fn try_eval(&mut self, js: &str) -> Result<Value, String> {
        let r = self.try_call(
            "Runtime.evaluate",
            json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("threw {e}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until `js` evaluates to `true` on the page (the page updates itself; this only
    /// looks), failing after a bounded time with `what`.
    pub fn wait_for(&mut self, what: &str, js: &str) {
        let deadline = Instant::now() + PAGE_WAIT;
        loop {
            let seen = self.try_eval(js);
            if seen == Ok(Value::Bool(true)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed: {what} ({js}; last: {seen:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Saves a PNG of the page's viewport to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Checks that the page is readable at its current size: nothing wider than the viewport
    /// (no sideways scrolling) and no visible text under 12 px.
    pub fn assert_readable(&mut self, what: &str) {
        let report = self.eval(
            r#"(() => {
                const wide = document.documentElement.scrollWidth > window.innerWidth + 1;
                const small = [...document.querySelectorAll("body *")]
                  .filter((e) => e.offsetParent !== null && e.childNodes.length &&
                    [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim()))
                  .filter((e) => parseFloat(getComputedStyle(e).fontSize) < 12)
                  .map((e) => e.tagName + "." + e.className);
                return { wide, width: document.documentElement.scrollWidth, small };
            })()"#,
        );
        assert_eq!(
            report["wide"],
            json!(false),
            "{what}: wider than the viewport: {report}"
        );
        assert_eq!(
            report["small"],
            json!([]),
            "{what}: text under 12 px: {report}"
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a test saves its screenshots: `target/screenshots/NAME.png` of the workspace.
pub fn screenshot_path(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("screenshots")
        .join(format!("{name}.png"))
}
