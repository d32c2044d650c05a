//! The browser build (`tools/web/build.sh` → `target/web/`) in headless Chromium on its
//! software WebGPU adapter (SwiftShader), driven over the DevTools protocol: a 12-step render
//! of a fixed prompt and seed, started from the page's URL, finishes; the image is not blank
//! and has the prompt's colour; the tokens fixed per step equal the native build's.
//!
//! Needs the web build and `chromium` (CI installs both and runs this with `--ignored`):
//!
//! ```sh
//! tools/web/build.sh && cargo test --release -p tessera --test web -- --ignored
//! ```

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn site() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web")
}

/// Serves `root` over HTTP on 127.0.0.1 (a port of the system's choosing) from a thread.
fn serve(root: PathBuf) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || answer(stream, &root));
        }
    });
    port
}

fn answer(mut stream: TcpStream, root: &Path) {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Skip the headers.
    let mut h = String::new();
    while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/");
    let path = path
        .split('?')
        .next()
        .unwrap_or("/")
        .trim_start_matches('/');
    let file = root.join(if path.is_empty() { "index.html" } else { path });
    let (status, body) = match std::fs::read(&file) {
        Ok(b) if !path.contains("..") => ("200 OK", b),
        _ => ("404 Not Found", Vec::new()),
    };
    let kind = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript",
        Some("wasm") => "application/wasm",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

/// Headless Chromium with WebGPU on SwiftShader and a DevTools port; killed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn browser() -> (Browser, u16) {
    let profile = common::tmp("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    let exe = std::env::var("TESSERA_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let child = Command::new(&exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--enable-unsafe-webgpu",
            "--use-webgpu-adapter=swiftshader",
            "--remote-debugging-port=0",
            "about:blank",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{exe}: {e} (apt-get install chromium)"));
    let b = Browser { child, profile };
    // Chromium writes the port it chose into the profile.
    let file = b.profile.join("DevToolsActivePort");
    let start = Instant::now();
    loop {
        if let Some(port) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse().ok())
        {
            return (b, port);
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "chromium did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// GET `path` on 127.0.0.1:`port`, the body as text (read to its Content-Length: the
/// DevTools server keeps the connection open).
fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").expect("write");
    let mut reader = BufReader::new(s);
    let mut length = 0usize;
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
        line.clear();
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).expect("body");
    String::from_utf8_lossy(&body).into_owned()
}

/// A DevTools session on the browser's page.
struct Page {
    ws: tungstenite::WebSocket<TcpStream>,
    id: u64,
}

impl Page {
    fn open(port: u16) -> Self {
        let list: serde_json::Value = serde_json::from_str(&get(port, "/json/list")).expect("json");
        let url = list
            .as_array()
            .and_then(|l| l.iter().find(|t| t["type"] == "page"))
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_owned();
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("websocket");
        Self { ws, id: 0 }
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.id += 1;
        let msg = serde_json::json!({"id": self.id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send");
        loop {
            let m = self.ws.read().expect("read");
            if let Ok(text) = m.to_text()
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(text)
                && v["id"] == self.id
            {
                return v;
            }
        }
    }

    fn eval(&mut self, expression: &str) -> String {
        let v = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        );
        v["result"]["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The mean colour of the pixels that are not near-white background.
fn ink(img: &image::RgbImage) -> [f64; 3] {
    let mut sum = [0.0f64; 3];
    let mut n = 0.0f64;
    for p in img.pixels() {
        if p.0.iter().all(|&c| c > 230) {
            continue;
        }
        for (s, &v) in sum.iter_mut().zip(&p.0) {
            *s += f64::from(v);
        }
        n += 1.0;
    }
    sum.map(|s| s / n.max(1.0))
}

#[test]
#[ignore = "needs tools/web/build.sh and chromium; CI runs it with --ignored"]
fn the_page_renders_from_its_url_as_the_native_build_does() {
    assert!(
        site().join("index.html").is_file(),
        "no web build: run tools/web/build.sh"
    );
    let http = serve(site());
    let (_browser, devtools) = browser();
    eprintln!("devtools on port {devtools}");
    let mut page = Page::open(devtools);
    eprintln!("page session open");
    let url = format!("http://127.0.0.1:{http}/?prompt=red%20apple&seed=3&steps=12&run=1");
    let start = Instant::now();
    page.call("Page.navigate", serde_json::json!({ "url": url }));
    let mut last = String::new();
    let title = loop {
        let t = page.eval("document.title");
        if t != last {
            eprintln!("{:.1} s: {t}", start.elapsed().as_secs_f64());
            last.clone_from(&t);
        }
        if t.ends_with(" — done") || t.contains(" — error") {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "no result after 10 minutes (title {t:?})"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("page load to image: {:.1} s", start.elapsed().as_secs_f64());
    assert!(title.ends_with(" — done"), "{title}");
    let src = page.eval("document.getElementById('result').src");
    let b64 = src
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URL");
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let img = image::load_from_memory(&png).expect("png").to_rgb8();
    let ink = ink(&img);
    eprintln!("ink colour {ink:?}");
    assert!(
        ink[0] > ink[1] + 30.0 && ink[0] > ink[2] + 30.0,
        "a red apple's ink is red: {ink:?}"
    );
    let steps = page.eval("document.getElementById('steps').textContent");
    // The native build, same prompt, seed and steps.
    let out = common::tmp("web-native.png");
    let err = common::ok(&[
        "--render",
        common::s(&out),
        "--prompt",
        "red apple",
        "--seed",
        "3",
        "--steps",
        "12",
    ]);
    let native = err
        .lines()
        .find_map(|l| l.strip_prefix("tokens fixed per step: "))
        .expect("the native run's per-step counts");
    assert_eq!(
        steps.trim(),
        native.trim(),
        "tokens fixed per step, page vs native"
    );
}
