//! The status page (`GET /` on the admin listener) in a real browser:
//! headless Chromium (Debian's `chromium`) loads it against a running
//! pgsplit and a real cluster, and the test reads the live DOM through the
//! DevTools protocol. It checks that the backends' rows and the lag
//! sparklines are rendered, and that a replica whose replay is paused turns
//! its rotation badge within two probe intervals (timed by the page itself:
//! each row carries the instant it first showed its current rotation state).
//!
//! Skipped, with a message, only when Chromium is not installed
//! (`scripts/test.sh` installs it). `PGSPLIT_CHROMIUM` picks the binary
//! (default `chromium`). With `PGSPLIT_STATUS_SCREENSHOT=FILE` the test also
//! saves a 1280x900 screenshot of the page once the replica has lagged (the
//! one in docs/ was made so).

mod common;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use pgsplit::config::AuthMethod;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Long enough that "within two intervals" is measured, not scheduling noise.
const INTERVAL_MS: u64 = 1000;

fn chromium_binary() -> String {
    std::env::var("PGSPLIT_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Whether the browser runs at all.
fn chromium_present() -> bool {
    Command::new(chromium_binary())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A headless Chromium showing one page, in its own process group and
/// profile directory; both go when it is dropped.
struct Browser {
    child: Child,
    profile: PathBuf,
    devtools_port: u16,
}

impl Browser {
    async fn open(url: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "pgsplit-chromium-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium_binary())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--hide-scrollbars",
                "--disable-crash-reporter",
                "--disable-breakpad",
                "--disable-component-update",
                "--disable-background-networking",
                "--window-size=1280,900",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so that drop ends the renderer and helper
            // processes too, by this group's id.
            .process_group(0)
            .spawn()
            .expect("chromium starts");
        let mut browser = Browser {
            child,
            profile,
            devtools_port: 0,
        };
        // Chromium writes the port it chose here once it listens.
        let port_file = browser.profile.join("DevToolsActivePort");
        let mut port = 0;
        eventually(
            Duration::from_secs(30),
            "chromium's DevToolsActivePort",
            || {
                port = std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
                    .unwrap_or(0);
                std::future::ready(port != 0)
            },
        )
        .await;
        browser.devtools_port = port;
        browser
    }

    /// The DevTools connection to the page showing `url`.
    async fn page(&self, url: &str) -> Cdp {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let list = http_get(self.devtools_port, "/json/list")
                .await
                .unwrap_or_default();
            let targets: Value = serde_json::from_str(&list).unwrap_or(Value::Null);
            let ws = targets.as_array().and_then(|a| {
                a.iter()
                    .find(|t| t["type"] == "page" && t["url"].as_str() == Some(url))
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            });
            if let Some(ws) = ws {
                return tokio::time::timeout(Duration::from_secs(10), Cdp::connect(ws))
                    .await
                    .expect("the DevTools WebSocket handshake within 10 s");
            }
            assert!(
                Instant::now() < deadline,
                "no DevTools target for {url}: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test started.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// GET `path` from 127.0.0.1:`port`; the body (read to its Content-Length:
/// DevTools' HTTP server keeps the connection open).
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::other("DevTools HTTP timed out"))??;
        out.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&out);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || length.is_some_and(|len| body.len() >= len) {
                return Ok(body.to_owned());
            }
        }
        if n == 0 {
            return Ok(String::new());
        }
    }
}

/// Just enough of a WebSocket client (RFC 6455) to speak the DevTools
/// protocol: masked text frames out, whole (possibly fragmented) messages in.
struct Cdp {
    stream: TcpStream,
    buffered: Vec<u8>,
    next_id: u64,
}

impl Cdp {
    async fn connect(ws_url: &str) -> Cdp {
        let rest = ws_url.strip_prefix("ws://").expect("a ws:// URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap());
        let mut stream = TcpStream::connect(host).await.expect("DevTools socket");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: cGdzcGxpdC1zdGF0dXMtcGc=\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut cdp = Cdp {
            stream,
            buffered: Vec::new(),
            next_id: 1,
        };
        let end = loop {
            if let Some(i) = cdp.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            cdp.read_more().await;
        };
        let head = String::from_utf8_lossy(&cdp.buffered[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        cdp.buffered.drain(..end);
        cdp
    }

    async fn read_more(&mut self) {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.expect("DevTools read");
        assert!(n > 0, "DevTools closed the connection");
        self.buffered.extend_from_slice(&chunk[..n]);
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buffered.len() < n {
            self.read_more().await;
        }
        self.buffered.drain(..n).collect()
    }

    async fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81u8];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xffff => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x5a, 0x17, 0xc3, 0x81];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    /// The next whole text message.
    async fn receive(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let head = self.take(2).await;
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            let len = match head[1] & 0x7f {
                126 => u16::from_be_bytes(self.take(2).await.try_into().unwrap()) as usize,
                127 => u64::from_be_bytes(self.take(8).await.try_into().unwrap()) as usize,
                n => n as usize,
            };
            let mask = if head[1] & 0x80 != 0 {
                Some(self.take(4).await)
            } else {
                None
            };
            let mut payload = self.take(len).await;
            if let Some(m) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match opcode {
                0x8 => panic!("DevTools closed the WebSocket"),
                0x9 | 0xa => continue, // ping / pong: not a message
                _ => message.extend_from_slice(&payload),
            }
            if fin {
                return String::from_utf8(message).expect("DevTools speaks UTF-8");
            }
        }
    }

    /// Calls `method`; its result (panics on a protocol error).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params });
        self.send(&request.to_string()).await;
        let answer = async {
            loop {
                let reply: Value = serde_json::from_str(&self.receive().await).unwrap();
                if reply["id"] == id {
                    return reply;
                }
            }
        };
        let reply = tokio::time::timeout(Duration::from_secs(20), answer)
            .await
            .unwrap_or_else(|_| panic!("DevTools did not answer {method} within 20 s"));
        assert!(reply.get("error").is_none(), "{method}: {reply}");
        reply["result"].clone()
    }

    /// Evaluates a JavaScript expression in the page; its value.
    async fn evaluate(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }
}

/// What the page shows now, read from its DOM.
const READ_PAGE: &str = r##"(() => document.getElementById("events") === null
  ? { loading: true, rows: [], events: [] } : ({
  updated: document.getElementById("updated").textContent,
  error: document.getElementById("error").style.display === "block"
    ? document.getElementById("error").textContent : null,
  rows: [...document.querySelectorAll("#backends tbody tr")].map(r => ({
    name: r.dataset.backend,
    role: r.dataset.role,
    rotation: r.dataset.rotation,
    healthy: r.dataset.healthy,
    changed_at: Number(r.dataset.changedAt),
    lag_ms: r.children[5]?.textContent ?? null,
    badge: r.querySelector("td.rotation .badge")?.textContent ?? null,
    badge_class: r.querySelector("td.rotation .badge")?.className ?? null,
    spark_points: Number(r.querySelector("svg.spark")?.dataset.points ?? -1),
    polyline: r.querySelector("svg.spark polyline")?.getAttribute("points") ?? null,
  })),
  events: [...document.querySelectorAll("#events li")].map(li => ({
    kind: li.dataset.kind ?? null, text: li.textContent })),
  connections: document.getElementById("connections-body").textContent,
  traffic: document.getElementById("traffic-body").textContent,
  ryw: [...document.querySelectorAll("#ryw-body tr[data-outcome]")].length,
}))()"##;

/// Reads the page every 50 ms until `cond` holds; what it showed then.
/// Panics with `what` and the last reading after `timeout`.
async fn read_until(
    page: &mut Cdp,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let shown = page.evaluate(READ_PAGE).await;
        if cond(&shown) {
            return shown;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}; the page shows {shown:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row<'a>(page: &'a Value, backend: &str) -> &'a Value {
    page["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == backend))
        .unwrap_or_else(|| panic!("no row for {backend}: {page:#}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_chromium_shows_backends_sparklines_and_a_paused_replica() {
    if !chromium_present() {
        eprintln!(
            "SKIPPED: {} is not installed; the status page's browser test needs headless \
             Chromium (apt-get install chromium, or run scripts/test.sh, which installs it)",
            chromium_binary()
        );
        return;
    }
    let env = Env::start(Setup::default().tweak(|c| {
        c.health.interval_ms = INTERVAL_MS;
        c.auth.method = AuthMethod::Trust;
    }))
    .await;
    let names: Vec<String> = env.cluster.nodes().iter().map(|n| n.name.clone()).collect();

    // Self-contained: nothing the page loads comes from elsewhere.
    let (code, html) = env.http_get("/").await;
    assert_eq!(code, 200);
    for outside in ["src=", "href=", "url(", "@import", "<link", "https://"] {
        assert!(!html.contains(outside), "the page refers to {outside}...");
    }

    // Some traffic for the shares: a write and reads.
    let app = env.connect(env.rw).await;
    app.batch_execute("CREATE TABLE ticks(id serial PRIMARY KEY)")
        .await
        .unwrap();
    for _ in 0..5 {
        app.simple_query("SELECT count(*) FROM pg_class")
            .await
            .unwrap();
    }

    let url = format!("http://{}/", env.admin);
    let browser = Browser::open(&url).await;
    let mut page = browser.page(&url).await;

    // Every backend has a row, and each replica's sparkline has points.
    let mut shown = read_until(
        &mut page,
        Duration::from_secs(20),
        "three backend rows and sparklines with two points or more",
        |s| {
            let rows = s["rows"].as_array().map_or(0, Vec::len);
            rows == 3
                && s["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["role"] == "replica")
                    .all(|r| r["spark_points"].as_i64().unwrap_or(0) >= 2)
        },
    )
    .await;
    assert!(shown["error"].is_null(), "{shown:#}");
    let primary = row(&shown, &names[0]);
    assert_eq!(primary["role"], "primary");
    assert_eq!(primary["healthy"], "yes");
    assert_eq!(primary["spark_points"], -1, "no sparkline for the primary");
    for name in &names[1..] {
        let r = row(&shown, name);
        assert_eq!(
            (&r["role"], &r["rotation"], &r["badge"]),
            (&json!("replica"), &json!("in"), &json!("in rotation")),
            "{shown:#}"
        );
        let points = r["polyline"].as_str().unwrap();
        assert_eq!(
            points.split_whitespace().count() as i64,
            r["spark_points"].as_i64().unwrap(),
            "{r}"
        );
        assert!(
            points.split_whitespace().all(|p| {
                let (x, y) = p.split_once(',').unwrap();
                x.parse::<f64>().is_ok() && y.parse::<f64>().is_ok()
            }),
            "{points}"
        );
    }
    let connections = shown["connections"].as_str().unwrap();
    assert!(
        connections.contains("read_write") && connections.contains(&names[0]),
        "{connections}"
    );
    assert!(
        shown["traffic"].as_str().unwrap().contains("primary"),
        "{shown:#}"
    );
    assert_eq!(shown["ryw"], 5, "one row per read-your-writes outcome");

    // Replay paused on one replica, then writes on the primary: the page
    // turns that replica's badge within two probe intervals of the write.
    let paused = &names[1];
    env.cluster.pause_replay(1).unwrap();
    let wrote_at = now_ms();
    app.batch_execute("INSERT INTO ticks DEFAULT VALUES")
        .await
        .unwrap();
    shown = read_until(
        &mut page,
        Duration::from_secs(10),
        "the paused replica's badge turns",
        |s| row(s, paused)["rotation"] == "out",
    )
    .await;
    let r = row(&shown, paused);
    let turned_after = r["changed_at"].as_u64().unwrap().saturating_sub(wrote_at);
    println!("badge turned {turned_after} ms after the write (interval {INTERVAL_MS} ms)");
    assert!(
        turned_after <= 2 * INTERVAL_MS,
        "badge turned {turned_after} ms after the write: {r}"
    );
    assert_eq!(r["badge"], "out", "{r}");
    assert!(
        r["badge_class"].as_str().unwrap().contains("warn"),
        "up but out of rotation: {r}"
    );
    assert_eq!(
        row(&shown, &names[2])["rotation"],
        "in",
        "the other stays: {shown:#}"
    );

    // The lag grows while replay stays paused, and the page shows the
    // event that took it out (the same as /events).
    for _ in 0..5 {
        app.batch_execute("INSERT INTO ticks DEFAULT VALUES")
            .await
            .unwrap();
        app.simple_query("SELECT count(*) FROM ticks")
            .await
            .unwrap();
    }
    read_until(
        &mut page,
        Duration::from_secs(10),
        "the rotation event on the page",
        |s| {
            s["events"].as_array().unwrap().iter().any(|e| {
                e["kind"] == "left_rotation" && e["text"].as_str().unwrap().contains(paused)
            })
        },
    )
    .await;
    let (_, events) = env.http_get("/events").await;
    let events: Value = serde_json::from_str(&events).unwrap();
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "left_rotation" && e["backend"] == json!(paused)),
        "{events:#}"
    );

    if let Ok(file) = std::env::var("PGSPLIT_STATUS_SCREENSHOT") {
        // A picture worth showing: reads on the replicas (fresh sessions
        // on the read-only port) and a lag line that has grown for a while.
        for _ in 0..20 {
            let reader = env.connect(env.ro).await;
            served_by(&reader).await;
        }
        read_until(
            &mut page,
            Duration::from_secs(30),
            "the paused replica's lag past 5 s",
            |s| {
                row(s, paused)["lag_ms"]
                    .as_str()
                    .and_then(|t| t.replace(',', "").parse::<u64>().ok())
                    .is_some_and(|ms| ms > 5000)
            },
        )
        .await;
        let shot = page
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": false }),
            )
            .await;
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(Path::new(&file), png).unwrap();
        println!("screenshot written to {file}");
    }

    env.cluster.resume_replay(1).unwrap();
    read_until(
        &mut page,
        Duration::from_secs(10),
        "the badge turns back",
        |s| row(s, paused)["rotation"] == "in",
    )
    .await;
    drop(page);
    drop(browser);
}
