//! The built-in page in a real headless Chromium, driven over the W3C WebDriver protocol (chromedriver):
//! sessions and tool calls appear without a reload, a call expands, agent markup shows as text and never
//! runs, the keyboard works, and the page reconnects and resyncs after a server restart. Screenshots go
//! to tests/artifacts/.

mod common;
mod live_support;

use common::TestServer as Server;
use live_support::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const CHROMIUM: &str = "/usr/bin/chromium";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn chromedriver_path() -> Option<PathBuf> {
    let candidates = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join("chromedriver"))
                    .find(|p| p.exists())
            })
        })
}

/// A chromedriver process and one browser session in it.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let driver_path = chromedriver_path();
        assert!(
            driver_path.is_some() && Path::new(CHROMIUM).exists(),
            "this test needs Debian's chromium and chromium-driver (found chromium: {}, chromedriver: {:?}); \
             install them with `apt-get install -y chromium chromium-driver` (.ci/run does this)",
            Path::new(CHROMIUM).exists(),
            driver_path
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().expect("addr").port()
        };
        let driver = Command::new(driver_path.expect("checked above"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..200 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == true {
                        ready = true;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver did not start on port {port}");
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-first-run", "--window-size=1440,1200",
                        format!("--user-data-dir={}", profile.path().display()),
                    ]
                }
            }}
        });
        let resp: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new WebDriver session")
            .json()
            .await
            .expect("session JSON");
        let session = resp["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {resp}"))
            .to_string();
        Browser {
            http,
            base,
            session,
            driver,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {path} answered {status}: {v}"
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    async fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// Polls `expr` (a JavaScript expression) until it is truthy; fails after 20 s instead of hanging.
    async fn wait(&self, what: &str, expr: &str) -> Value {
        let script = format!("return ({expr});");
        for _ in 0..400 {
            let v = self.js(&script).await;
            if !(v.is_null() || v == false || v == 0 || v == "") {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let state = self
            .js("return document.body.innerText.slice(0, 2000);")
            .await;
        panic!("timed out waiting for {what} ({expr}); page text: {state}");
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types into the focused element (WebDriver key codes for special keys).
    async fn keys(&self, text: &str) {
        let id = self
            .cmd(reqwest::Method::GET, "/element/active", None)
            .await[ELEMENT]
            .as_str()
            .expect("an active element")
            .to_string();
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.cmd(reqwest::Method::GET, "/screenshot", None).await;
        let png = decode_base64(b64.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/artifacts");
        std::fs::create_dir_all(&dir).expect("artifacts dir");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter_map(val) {
        acc = (acc << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

const SESSION: &str = "d796e8ba-ef3c-453f-97d7-b644930563f5";
const XSS_IMG: &str = r#"<img src=x onerror="window.__xss=1">"#;
const XSS_SCRIPT: &str = "<script>window.__xss=2</script>";
const FIXTURE_MARKUP: &str = r#"<tag onmouseover="alert(1)">not html</tag>"#;

/// An architect-like session (as in tests/fixtures/ao-sessions/architect.jsonl): a run, model turns and
/// tool calls, one failed, one whose output holds markup.
fn first_batch(trace: &str, run: &str, t0: u64) -> Value {
    let ms = 1_000_000u64;
    let mut spans = vec![SpanSpec {
        trace,
        span: run,
        parent: None,
        name: "invoke_agent local-codebase-researcher",
        start_ns: t0,
        end_ns: t0 + 900 * ms,
        error: false,
        attrs: vec![
            ("gen_ai.operation.name", json!("invoke_agent")),
            ("gen_ai.agent.name", json!("local-codebase-researcher")),
            ("gen_ai.conversation.id", json!(SESSION)),
            ("ao.session.title", json!("architect")),
            ("ao.in_progress", json!(true)),
            (
                "gen_ai.input.messages",
                json!("Summarize how the commands/ folder is organised and flag anything unused."),
            ),
        ],
    }
    .json()];
    spans.push(
        SpanSpec {
            trace,
            span: &span_hex(101),
            parent: Some(run),
            name: "chat claude-sonnet-4-5",
            start_ns: t0 + 10 * ms,
            end_ns: t0 + 180 * ms,
            error: false,
            attrs: vec![
                ("gen_ai.operation.name", json!("chat")),
                ("gen_ai.request.model", json!("claude-sonnet-4-5-20250929")),
                ("gen_ai.conversation.id", json!(SESSION)),
                ("gen_ai.usage.input_tokens", json!(1203)),
                ("gen_ai.usage.output_tokens", json!(412)),
            ],
        }
        .json(),
    );
    spans.push(tool_span(
        SESSION,
        trace,
        &span_hex(102),
        run,
        "Bash",
        r#"{"command":"ls -1 commands/","description":"List command scripts"}"#,
        "ao-clean\nao-list\nao-new\nao-resume\nao-show\nao-status\nlib",
        t0 + 190 * ms,
        false,
    ));
    spans.push(tool_span(
        SESSION,
        trace,
        &span_hex(103),
        run,
        "Read",
        r#"{"file_path":"/home/dev/orchestrator/commands/lib/legacy.py"}"#,
        "File does not exist.",
        t0 + 230 * ms,
        true,
    ));
    let markup = format!("     1\t\"\"\"Session file helpers.\"\"\"\n     2\t{XSS_IMG}\n     3\t{XSS_SCRIPT}\n     4\t{FIXTURE_MARKUP}");
    spans.push(tool_span(
        SESSION,
        trace,
        &span_hex(104),
        run,
        "Read",
        r#"{"file_path":"/home/dev/orchestrator/commands/lib/session.py","limit":80}"#,
        &markup,
        t0 + 280 * ms,
        false,
    ));
    // A sub-agent: the Task call starts a run of its own, which makes its own tool call.
    spans.push(tool_span(
        SESSION,
        trace,
        &span_hex(106),
        run,
        "Task",
        r#"{"description":"Find unused commands","subagent_type":"Explore"}"#,
        "ao-clean and ao-list import nothing from lib/",
        t0 + 320 * ms,
        false,
    ));
    spans.push(
        SpanSpec {
            trace,
            span: &span_hex(107),
            parent: Some(&span_hex(106)),
            name: "invoke_agent Explore",
            start_ns: t0 + 330 * ms,
            end_ns: t0 + 600 * ms,
            error: false,
            attrs: vec![
                ("gen_ai.operation.name", json!("invoke_agent")),
                ("gen_ai.agent.name", json!("Explore")),
                ("gen_ai.conversation.id", json!(SESSION)),
            ],
        }
        .json(),
    );
    spans.push(tool_span(
        SESSION,
        trace,
        &span_hex(108),
        &span_hex(107),
        "Grep",
        r#"{"pattern":"^from lib","path":"commands","output_mode":"files_with_matches"}"#,
        "commands/ao-new\ncommands/ao-resume",
        t0 + 340 * ms,
        false,
    ));
    traces("ao-architect", spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_sessions_live_and_renders_agent_text_as_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("aotel.db");
    let config = || {
        let mut c = aotel::Config::with_db(&db);
        c.live.jaeger_url = Some("http://127.0.0.1:16686".into());
        c
    };
    let any: SocketAddr = ([127, 0, 0, 1], 0).into();
    let server = Server::start_on(config(), (any, any, any)).await;
    let client = reqwest::Client::new();
    let browser = Browser::start().await;

    browser.goto(&format!("http://{}/", server.api)).await;
    browser
        .wait(
            "the page to connect",
            "document.getElementById('conn').dataset.state === 'live'",
        )
        .await;
    browser
        .wait("the empty list", "!document.getElementById('empty').hidden")
        .await;
    // Marks this page load: if anything reloaded the page, the mark would be gone.
    browser
        .js("window.__loadMark = 'same page'; return 1;")
        .await;

    let trace = trace_hex(4242);
    let run = span_hex(4242);
    let t0 = now_ns() - 5_000_000_000;
    post(
        &client,
        server.http,
        "/v1/traces",
        &first_batch(&trace, &run, t0),
    )
    .await;
    let row = format!("#session-rows tr[data-key='{SESSION}']");
    browser
        .wait(
            "the session row",
            &format!("document.querySelector(\"{row}\")"),
        )
        .await;
    let cells = browser
        .wait("counters in the row", &format!("document.querySelector(\"{row}\").innerText.includes('architect') && document.querySelector(\"{row}\").innerText"))
        .await;
    let cells = cells.as_str().unwrap_or_default().to_string();
    assert!(
        cells.contains("local-codebase-researcher"),
        "agent shown: {cells}"
    );
    assert!(cells.contains("running"), "status shown: {cells}");
    browser.screenshot("live_browser_list.png").await;

    // Search narrows the list and keeps it live.
    browser.click("#search").await;
    browser.keys("nothing-matches-this").await;
    browser.wait("no matches", "!document.getElementById('empty').hidden && document.querySelectorAll('#session-rows tr').length === 0").await;
    browser.js("document.getElementById('search').value = ''; document.getElementById('search').dispatchEvent(new Event('input')); return 1;").await;
    browser
        .wait(
            "the row back",
            &format!("document.querySelector(\"{row}\")"),
        )
        .await;

    // Open the session from the keyboard: focus the row, Enter.
    browser
        .js(&format!(
            "document.querySelector(\"{row}\").focus(); return 1;"
        ))
        .await;
    browser.keys("\u{E007}").await;
    browser
        .wait(
            "the session view",
            "!document.getElementById('session-view').hidden",
        )
        .await;
    browser
        .wait(
            "five tool calls in the timeline",
            "document.querySelectorAll('#waterfall .span[data-op=\"execute_tool\"]').length === 5",
        )
        .await;
    let level = browser
        .js(&format!(
            "return document.querySelector(\"#waterfall .span[data-span-id='{}'] > .row\").getAttribute('aria-level');",
            span_hex(108)
        ))
        .await;
    assert_eq!(
        level, "4",
        "the sub-agent's call sits under its run, under the Task call, under the main run"
    );
    let title = browser
        .js("return document.getElementById('s-title').textContent;")
        .await;
    assert_eq!(title, "architect");
    let failed = browser.js("return Array.from(document.querySelectorAll('#waterfall .span.failed')).map(e => e.dataset.spanId);").await;
    assert_eq!(failed, json!([span_hex(103)]), "the failed call is marked");
    let jaeger = browser
        .js("return Array.from(document.querySelectorAll('#s-links a')).map(a => a.href);")
        .await;
    assert_eq!(
        jaeger,
        json!([format!("http://127.0.0.1:16686/trace/{trace}")])
    );

    // The timeline grows while we look at it.
    let edit = tool_span(
        SESSION,
        &trace,
        &span_hex(105),
        &run,
        "Edit",
        r#"{"file_path":"docs/COMMANDS.md","old_string":"- lib/legacy.py: old helpers\n","new_string":""}"#,
        "The file has been updated.",
        t0 + 400_000_000,
        false,
    );
    post(
        &client,
        server.http,
        "/v1/traces",
        &traces("ao-architect", vec![edit]),
    )
    .await;
    browser
        .wait(
            "the new call without a reload",
            "document.querySelectorAll('#waterfall .span[data-op=\"execute_tool\"]').length === 6",
        )
        .await;

    // Expand the call whose output holds markup: it is shown literally and nothing runs.
    let markup_row = format!("#waterfall .span[data-span-id='{}'] > .row", span_hex(104));
    browser.click(&markup_row).await;
    let result_sel = format!(
        "#waterfall .span[data-span-id='{}'] .block[data-kind='result'] pre",
        span_hex(104)
    );
    let shown = browser
        .wait("the tool result", &format!("document.querySelector(\"{result_sel}\") && document.querySelector(\"{result_sel}\").textContent"))
        .await;
    let shown = shown.as_str().unwrap_or_default();
    for literal in [XSS_IMG, XSS_SCRIPT, FIXTURE_MARKUP] {
        assert!(
            shown.contains(literal),
            "{literal:?} shown as text, got {shown:?}"
        );
    }
    let args_sel = format!(
        "#waterfall .span[data-span-id='{}'] .block[data-kind='arguments'] pre",
        span_hex(104)
    );
    let args = browser
        .js(&format!(
            "return document.querySelector(\"{args_sel}\").textContent;"
        ))
        .await;
    assert!(
        args.as_str()
            .unwrap_or_default()
            .contains("\n  \"file_path\": "),
        "arguments pretty-printed: {args}"
    );
    // Let an injected <img onerror> fire if one existed, then look.
    browser
        .wait("images to settle", "document.readyState === 'complete'")
        .await;
    let verdict = browser
        .js("return { xss: typeof window.__xss, imgs: document.querySelectorAll('#main img, #main tag').length, scripts: document.scripts.length };")
        .await;
    assert_eq!(
        verdict,
        json!({ "xss": "undefined", "imgs": 0, "scripts": 1 }),
        "agent markup must never become DOM"
    );

    // Keyboard: move to the failed call and open it with Enter.
    browser.js(&format!("document.querySelector(\"#waterfall .span[data-span-id='{}'] > .row\").focus(); return 1;", span_hex(103))).await;
    browser.keys("\u{E007}").await;
    let err = browser
        .wait("the failed call's details", &format!("(document.querySelector(\"#waterfall .span[data-span-id='{}'] .error-box\") || {{}}).textContent", span_hex(103)))
        .await;
    assert!(err.as_str().unwrap_or_default().contains("Failed"), "{err}");
    browser
        .js(&format!("document.querySelector(\"#waterfall .span[data-span-id='{}']\").scrollIntoView({{block: 'start'}}); window.scrollBy(0, -330); return 1;", span_hex(103)))
        .await;
    browser.screenshot("live_browser_session.png").await;
    browser
        .js("document.documentElement.dataset.theme = 'dark'; return 1;")
        .await;
    browser.screenshot("live_browser_session_dark.png").await;
    browser
        .js("delete document.documentElement.dataset.theme; return 1;")
        .await;

    // Restart the server on the same port: the page notices, reconnects by itself and resyncs.
    let addrs = server.addrs();
    server.stop().await;
    browser
        .wait(
            "the page to notice",
            "document.getElementById('conn').dataset.state !== 'live'",
        )
        .await;
    let server = Server::start_on(config(), addrs).await;
    browser
        .wait(
            "the page to reconnect",
            "document.getElementById('conn').dataset.state === 'live'",
        )
        .await;
    let end = now_ns();
    let finished = SpanSpec {
        trace: &trace,
        span: &run,
        parent: None,
        name: "invoke_agent local-codebase-researcher",
        start_ns: t0,
        end_ns: end,
        error: false,
        attrs: vec![
            ("gen_ai.operation.name", json!("invoke_agent")),
            ("gen_ai.agent.name", json!("local-codebase-researcher")),
            ("gen_ai.conversation.id", json!(SESSION)),
            ("ao.session.title", json!("architect")),
            ("ao.cost.usd", json!(0.0421445)),
        ],
    }
    .json();
    post(
        &client,
        server.http,
        "/v1/traces",
        &traces("ao-architect", vec![finished]),
    )
    .await;
    browser
        .wait(
            "the finished status after the restart",
            "(document.querySelector('#s-status .badge') || {}).textContent === 'finished'",
        )
        .await;
    let mark = browser.js("return window.__loadMark;").await;
    assert_eq!(
        mark, "same page",
        "everything above happened without a reload"
    );
    let opened = browser
        .js("return document.querySelectorAll('#waterfall .span.open').length;")
        .await;
    assert_eq!(opened, 2, "expanded calls stay open across the resync");

    browser.click("#collapse-all").await;
    browser.js("window.scrollTo(0, 0); return 1;").await;
    browser.screenshot("live_browser_timeline.png").await;

    browser.quit().await;
    server.stop().await;
}
