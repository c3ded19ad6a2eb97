//! Headless Chromium driven over the Chrome DevTools Protocol, for
//! end-to-end tests of the dashboard: a [`Browser`] is the process and
//! one websocket to it, a [`Page`] a tab attached to that websocket by a
//! flat session. Everything blocks: call it from a plain thread or
//! `spawn_blocking`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to write its `DevToolsActivePort`.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one protocol call may wait for its response.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Page::goto`] waits for `document.readyState == "complete"`.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// The interval of every poll: the port file, conditions, the exit.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a dropped [`Browser`] may take to exit after `Browser.close`
/// before it is killed.
const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// The browser names looked up on `PATH`, in order.
const CHROMIUM_NAMES: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// The Chromium binary: `$CHROMIUM` if set, else the first of
/// `chromium`, `chromium-browser`, `google-chrome` on `PATH`.
pub(crate) fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let dirs: Vec<PathBuf> = std::env::split_paths(&std::env::var_os("PATH")?).collect();
    CHROMIUM_NAMES.iter().find_map(|name| {
        dirs.iter()
            .map(|dir| dir.join(name))
            .find(|path| is_executable(path))
    })
}

/// Whether `path` is a file someone may execute.
fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An error response to a protocol call.
#[derive(Debug)]
struct ProtocolError {
    /// The method called.
    method: String,
    /// The error's `message` (and `data`, if any).
    message: String,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.method, self.message)
    }
}

impl std::error::Error for ProtocolError {}

/// An exception thrown (or a promise rejected) by evaluated JavaScript.
#[derive(Debug)]
struct JsException {
    /// The start of the expression evaluated.
    expression: String,
    /// The class of the exception (`SyntaxError`, ...), when an object.
    class: Option<String>,
    /// Its description: message and stack.
    text: String,
}

impl fmt::Display for JsException {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` threw {}", self.expression, self.text)
    }
}

impl std::error::Error for JsException {}

/// A headless Chromium process and a connection to its browser
/// websocket; killed, and its profile removed, on drop.
pub(crate) struct Browser {
    /// The process (Debian's wrapper script execs the browser itself).
    child: Child,
    /// The temporary directory: `profile/` and `chromium.log`.
    dir: PathBuf,
    /// The browser-level DevTools websocket, shared by every page.
    socket: WebSocket<TcpStream>,
    /// The id of the last request sent.
    next_id: u64,
    /// Console errors and uncaught exceptions seen, by session id.
    console_errors: HashMap<String, Vec<String>>,
}

impl Browser {
    /// Starts headless Chromium on a fresh profile and connects to it.
    pub(crate) fn launch() -> anyhow::Result<Browser> {
        let binary =
            find_chromium().context("no Chromium found: set CHROMIUM or put chromium on PATH")?;
        let dir = temp_dir()?;
        let profile = dir.join("profile");
        let log_path = dir.join("chromium.log");
        let spawned = fs::create_dir(&profile)
            .and_then(|()| fs::File::create(&log_path))
            .and_then(|log| {
                let mut user_data_dir = OsString::from("--user-data-dir=");
                user_data_dir.push(&profile);
                Command::new(&binary)
                    .args([
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--remote-debugging-port=0",
                    ])
                    .arg(user_data_dir)
                    .arg("about:blank")
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
            });
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(anyhow!(e).context(format!("starting {}", binary.display())));
            }
        };
        match connect(&mut child, &profile) {
            Ok(socket) => Ok(Browser {
                child,
                dir,
                socket,
                next_id: 0,
                console_errors: HashMap::new(),
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let _ = fs::remove_dir_all(&dir);
                let output = match log.trim() {
                    "" => " (no output)".to_owned(),
                    log => format!("; the end of its output:\n{}", tail(log, 20)),
                };
                Err(e.context(format!("launching {}{output}", binary.display())))
            }
        }
    }

    /// Opens a tab of `width` x `height` CSS pixels (scale factor 1,
    /// `mobile` emulation or not) on `about:blank`, with the page and
    /// runtime events on.
    pub(crate) fn new_page(
        &mut self,
        width: u32,
        height: u32,
        mobile: bool,
    ) -> anyhow::Result<Page<'_>> {
        let target = self.call(None, "Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"]
            .as_str()
            .context("Target.createTarget returned no targetId")?;
        let attached = self.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        let session = attached["sessionId"]
            .as_str()
            .context("Target.attachToTarget returned no sessionId")?
            .to_owned();
        let mut page = Page {
            browser: self,
            session,
        };
        page.call(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": width,
                "height": height,
                "deviceScaleFactor": 1,
                "mobile": mobile,
            }),
        )?;
        page.call("Page.enable", json!({}))?;
        page.call("Runtime.enable", json!({}))?;
        Ok(page)
    }

    /// Sends one request (to `session`, or to the browser itself) and
    /// reads messages until its response, recording the console events
    /// that arrive meanwhile.
    fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> anyhow::Result<Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = session.into();
        }
        self.socket
            .send(Message::Text(request.to_string().into()))
            .with_context(|| format!("sending {method}"))?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{method}: no response after {CALL_TIMEOUT:?}");
            }
            self.socket.get_ref().set_read_timeout(Some(left))?;
            let message = match self.socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    bail!("{method}: no response after {CALL_TIMEOUT:?}")
                }
                Err(e) => {
                    return Err(anyhow!(e).context(format!("waiting for the response to {method}")));
                }
            };
            let text = match &message {
                Message::Text(text) => text.as_str(),
                Message::Close(frame) => {
                    bail!("the browser closed the DevTools connection during {method}: {frame:?}")
                }
                _ => continue,
            };
            let mut message: Value = serde_json::from_str(text)
                .with_context(|| format!("a DevTools message that is not JSON: {text}"))?;
            if message["id"].as_u64() != Some(id) {
                self.record_event(&message);
                continue;
            }
            if let Some(error) = message.get("error") {
                let mut text = error["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_owned();
                if let Some(data) = error["data"].as_str() {
                    text = format!("{text}: {data}");
                }
                return Err(ProtocolError {
                    method: method.to_owned(),
                    message: text,
                }
                .into());
            }
            return Ok(message["result"].take());
        }
    }

    /// Keeps a console error or an uncaught exception of a page.
    fn record_event(&mut self, message: &Value) {
        let Some(session) = message["sessionId"].as_str() else {
            return;
        };
        let params = &message["params"];
        let entry = match message["method"].as_str() {
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .map(|args| args.iter().map(remote_object_text).collect())
                    .unwrap_or_default();
                let at = &params["stackTrace"]["callFrames"][0];
                match (at["url"].as_str(), at["lineNumber"].as_u64()) {
                    (Some(url), Some(line)) if !url.is_empty() => {
                        format!("{} (at {url}:{})", args.join(" "), line + 1)
                    }
                    _ => args.join(" "),
                }
            }
            Some("Runtime.exceptionThrown") => exception_text(&params["exceptionDetails"]),
            _ => return,
        };
        self.console_errors
            .entry(session.to_owned())
            .or_default()
            .push(entry);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask the browser to quit (it takes its renderers along), then
        // make sure it has.
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"});
        let _ = self.socket.send(Message::Text(close.to_string().into()));
        let deadline = Instant::now() + CLOSE_GRACE;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            thread::sleep(POLL_INTERVAL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Helper processes may still be writing into the profile.
        for _ in 0..20 {
            if fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

/// A tab of a [`Browser`]: a flat session over the browser's websocket.
pub(crate) struct Page<'a> {
    /// The browser, whose websocket carries the session.
    browser: &'a mut Browser,
    /// The session id from `Target.attachToTarget`.
    session: String,
}

impl Page<'_> {
    /// Navigates to `url` and waits (20 s at most) for the new document's
    /// `readyState` to be `"complete"`; a failed navigation is an error.
    pub(crate) fn goto(&mut self, url: &str) -> anyhow::Result<()> {
        // Mark the current document, so that its own readyState, already
        // complete, is not taken for the new one's.
        let marked = self.eval("document.__cdpPrevious = true").is_ok();
        let navigated = self.call("Page.navigate", json!({"url": url}))?;
        if let Some(error) = navigated["errorText"].as_str().filter(|e| !e.is_empty()) {
            bail!("navigating to {url}: {error}");
        }
        // No loaderId: a navigation within the same document.
        let condition = if marked && navigated.get("loaderId").is_some() {
            "document.readyState === 'complete' && !document.__cdpPrevious"
        } else {
            "document.readyState === 'complete'"
        };
        self.wait_for(condition, LOAD_TIMEOUT)
            .with_context(|| format!("loading {url}"))?;
        Ok(())
    }

    /// Evaluates `js` in the page (awaiting a promise) and returns its
    /// value as JSON: `undefined` and `NaN` are null, other values JSON
    /// cannot hold (`Infinity`, bigints) their text. An exception thrown
    /// is an error with its description.
    pub(crate) fn eval(&mut self, js: &str) -> anyhow::Result<Value> {
        let mut evaluated = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        )?;
        let details = &evaluated["exceptionDetails"];
        if !details.is_null() {
            return Err(JsException {
                expression: abbreviate(js),
                class: details["exception"]["className"]
                    .as_str()
                    .map(str::to_owned),
                text: exception_text(details),
            }
            .into());
        }
        let result = &mut evaluated["result"];
        Ok(match result["unserializableValue"].as_str() {
            Some("NaN") => Value::Null,
            Some("-0") => json!(0),
            Some(other) => Value::String(other.to_owned()),
            None => result["value"].take(),
        })
    }

    /// Evaluates `js_condition` every 100 ms until its value is truthy
    /// (not null, false, 0 or ""), and returns that value. Exceptions
    /// (but syntax errors) and errors of a page between documents count
    /// as not yet; past `timeout`, an error names the condition and its
    /// last value.
    pub(crate) fn wait_for(
        &mut self,
        js_condition: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.eval(js_condition) {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => value.to_string(),
                Err(e) if retryable(&e) => format!("error: {e:#}"),
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for `{js_condition}`; last value: {last}"
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Focuses the element `selector` matches, caret at the end of its
    /// content, and types `text` into it as `Input.insertText` does (the
    /// `beforeinput` and `input` events of real typing).
    pub(crate) fn insert_text(&mut self, selector: &str, text: &str) -> anyhow::Result<()> {
        let focused = self.eval(&format!(
            "(() => {{
                const el = document.querySelector({selector});
                if (!el) return 'missing';
                el.focus();
                if (typeof el.setSelectionRange === 'function') {{
                    try {{ el.setSelectionRange(el.value.length, el.value.length); }} catch (_) {{}}
                }}
                return el.getRootNode().activeElement === el ? 'focused' : 'unfocusable';
            }})()",
            selector = js_string(selector),
        ))?;
        match focused.as_str() {
            Some("focused") => {}
            Some("missing") => bail!("insert_text: no element matches `{selector}`"),
            _ => bail!("insert_text: `{selector}` does not take focus"),
        }
        self.call("Input.insertText", json!({"text": text}))?;
        Ok(())
    }

    /// Sets the `value` of the element `selector` matches (through the
    /// native setter, as frameworks watch it) and dispatches `input` and
    /// `change`: for inputs that cannot be typed into, such as numbers.
    /// A value the element sanitizes away is an error.
    pub(crate) fn set_value(&mut self, selector: &str, value: &str) -> anyhow::Result<()> {
        let set = self.eval(&format!(
            "(() => {{
                const el = document.querySelector({selector});
                if (!el) return null;
                const setter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value')?.set;
                if (setter) setter.call(el, {value}); else el.value = {value};
                el.dispatchEvent(new Event('input', {{ bubbles: true }}));
                el.dispatchEvent(new Event('change', {{ bubbles: true }}));
                return String(el.value);
            }})()",
            selector = js_string(selector),
            value = js_string(value),
        ))?;
        match set.as_str() {
            None => bail!("set_value: no element matches `{selector}`"),
            Some(now) if now != value => {
                bail!("set_value: `{selector}` holds {now:?} after being set to {value:?}")
            }
            Some(_) => Ok(()),
        }
    }

    /// Scrolls the element `selector` matches into view and clicks the
    /// middle of its box with the left mouse button: real mouse events,
    /// so an element covered by another is an error.
    pub(crate) fn click(&mut self, selector: &str) -> anyhow::Result<()> {
        let target = self.eval(&format!(
            "(() => {{
                const el = document.querySelector({selector});
                if (!el) return {{ error: 'no element matches' }};
                el.scrollIntoView({{ block: 'center', inline: 'center', behavior: 'instant' }});
                const r = el.getBoundingClientRect();
                if (r.width === 0 || r.height === 0) return {{ error: 'has an empty box (hidden?)' }};
                const x = r.left + r.width / 2, y = r.top + r.height / 2;
                const root = el.getRootNode();
                const hit = (root.elementFromPoint ? root : document).elementFromPoint(x, y);
                if (hit !== el && !el.contains(hit)) {{
                    const name = !hit ? 'nothing (off screen?)'
                        : hit.tagName.toLowerCase() + (hit.id ? '#' + hit.id : '')
                            + (typeof hit.className === 'string' && hit.className.trim()
                                ? '.' + hit.className.trim().split(/\\s+/).join('.') : '');
                    return {{ error: 'is covered at its middle by ' + name }};
                }}
                return {{ x, y }};
            }})()",
            selector = js_string(selector),
        ))?;
        if let Some(error) = target["error"].as_str() {
            bail!("click: `{selector}` {error}");
        }
        let (Some(x), Some(y)) = (target["x"].as_f64(), target["y"].as_f64()) else {
            bail!("click: no position for `{selector}`: {target}");
        };
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )?;
        for (kind, buttons) in [("mousePressed", 1), ("mouseReleased", 0)] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({
                    "type": kind,
                    "x": x,
                    "y": y,
                    "button": "left",
                    "buttons": buttons,
                    "clickCount": 1,
                }),
            )?;
        }
        Ok(())
    }

    /// Writes a PNG of the page, beyond the viewport too, to `path`
    /// (creating its directory).
    pub(crate) fn screenshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        )?;
        let data = shot["data"]
            .as_str()
            .context("Page.captureScreenshot returned no data")?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| anyhow!("decoding the screenshot: {e}"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The `console.error` calls and uncaught exceptions of this page so
    /// far (as far as the calls made have read them).
    pub(crate) fn console_errors(&self) -> Vec<String> {
        self.browser
            .console_errors
            .get(&self.session)
            .cloned()
            .unwrap_or_default()
    }

    /// One protocol call in this page's session.
    fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.browser.call(Some(&self.session), method, params)
    }
}

/// Waits for Chromium's `DevToolsActivePort` in `profile` and opens its
/// browser websocket, with the read timeout of a call.
fn connect(child: &mut Child, profile: &Path) -> anyhow::Result<WebSocket<TcpStream>> {
    let port_file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + LAUNCH_TIMEOUT;
    let (port, path) = loop {
        let found = fs::read_to_string(&port_file).ok();
        if let Some(found) = found.as_deref().and_then(parse_active_port) {
            break found;
        }
        if let Some(status) = child.try_wait()? {
            bail!("Chromium exited ({status}) before listening");
        }
        if Instant::now() >= deadline {
            bail!("no {} after {LAUNCH_TIMEOUT:?}", port_file.display());
        }
        thread::sleep(POLL_INTERVAL);
    };
    let stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to DevTools on port {port}"))?;
    stream.set_read_timeout(Some(CALL_TIMEOUT))?;
    stream.set_write_timeout(Some(CALL_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let url = format!("ws://127.0.0.1:{port}{path}");
    // Full-page screenshots outgrow the default 16 MiB frame limit.
    let config = WebSocketConfig::default()
        .max_frame_size(None)
        .max_message_size(None);
    let (socket, _) = tungstenite::client::client_with_config(url.as_str(), stream, Some(config))
        .map_err(|e| anyhow!("websocket handshake with {url}: {e}"))?;
    Ok(socket)
}

/// The port and browser websocket path of a whole `DevToolsActivePort`.
fn parse_active_port(contents: &str) -> Option<(u16, String)> {
    let mut lines = contents.lines();
    let port = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    let id = path.strip_prefix("/devtools/browser/")?;
    (!id.is_empty()).then(|| (port, path.to_owned()))
}

/// A new, empty directory in the system's temporary directory.
fn temp_dir() -> anyhow::Result<PathBuf> {
    /// Tells apart the directories of one process.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "devnet-chromium-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
    ));
    fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The text of a `Runtime.RemoteObject`, as the console would print it.
fn remote_object_text(object: &Value) -> String {
    match &object["value"] {
        Value::String(s) => s.clone(),
        Value::Null => object["description"]
            .as_str()
            .or_else(|| object["unserializableValue"].as_str())
            .or_else(|| object["type"].as_str())
            .unwrap_or("?")
            .to_owned(),
        value => value.to_string(),
    }
}

/// The text of a `Runtime.ExceptionDetails`: `Uncaught Error: ...`
/// with the stack, when there is one.
fn exception_text(details: &Value) -> String {
    let text = details["text"].as_str().unwrap_or("exception");
    let exception = &details["exception"];
    if exception.is_null() {
        return text.to_owned();
    }
    let description = remote_object_text(exception);
    // A rejection's text already holds the first line of the description:
    // "Uncaught (in promise) TypeError: ...".
    let first_line = description.lines().next().unwrap_or_default();
    match text.strip_suffix(first_line).unwrap_or(text).trim_end() {
        "" => description,
        prefix => format!("{prefix} {description}"),
    }
}

/// Whether a failed evaluation may succeed later: an exception but a
/// syntax error, or a protocol error such as a context destroyed by a
/// navigation; not a broken connection.
fn retryable(error: &anyhow::Error) -> bool {
    if let Some(exception) = error.downcast_ref::<JsException>() {
        return exception.class.as_deref() != Some("SyntaxError");
    }
    error.downcast_ref::<ProtocolError>().is_some()
}

/// JavaScript's truthiness of a JSON value.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `s` as a JavaScript string literal.
fn js_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// The start of an expression, for error messages.
fn abbreviate(js: &str) -> String {
    /// The characters kept.
    const MAX: usize = 200;
    match js.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}...", &js[..end]),
        None => js.to_owned(),
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
