//! The browser build (`tools/web/build.sh` → `target/web/`) in headless Chromium on its
//! software WebGPU adapter (SwiftShader), driven over the DevTools protocol:
//! - a 12-step render of a fixed prompt and seed, started from the page's URL, finishes; the
//!   image is not blank and has the prompt's colour; the tokens fixed per step equal the native
//!   build's;
//! - a hub model, fetched from a stand-in hub this test serves, generates, alone and in two
//!   Compare lanes; a bad hub id, a model over the page's limits (a tensor over the binding
//!   limit; too many bytes) and a bad option each end the title with their message;
//! - a dropped image opens in the inpaint panel and outpaints; a dropped model folder opens as
//!   the model and generates.
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
    // The headers: only a Range matters.
    let mut range: Option<(usize, usize)> = None;
    let mut h = String::new();
    while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
        if let Some((k, v)) = h.split_once(':')
            && k.eq_ignore_ascii_case("range")
            && let Some((a, b)) = v.trim().trim_start_matches("bytes=").split_once('-')
            && let (Ok(a), Ok(b)) = (a.parse(), b.parse())
        {
            range = Some((a, b));
        }
        h.clear();
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/");
    let (path, _query) = target.split_once('?').unwrap_or((target, ""));
    let path = path.trim_start_matches('/');
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let (root, path) = match path.strip_prefix("fixtures/") {
        Some(p) => (fixtures.as_path(), p),
        None => (root, path),
    };
    let (status, body, kind) = match path.strip_prefix("hub/") {
        Some(hub) => fake_hub(hub),
        None => {
            let file = root.join(if path.is_empty() { "index.html" } else { path });
            let kind = match file.extension().and_then(|e| e.to_str()) {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript",
                Some("wasm") => "application/wasm",
                Some("json") => "application/json",
                _ => "application/octet-stream",
            };
            match std::fs::read(&file) {
                Ok(b) if !path.contains("..") => ("200 OK", b, kind),
                _ => ("404 Not Found", Vec::new(), kind),
            }
        }
    };
    let (status, body) = match range {
        Some((a, b)) if status.starts_with("200") && a < body.len() => (
            "206 Partial Content",
            body[a..=b.min(body.len() - 1)].to_vec(),
        ),
        _ => (status, body),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(&body);
}

/// The files the stand-in hub served, in order.
static HUB_SERVED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The fixture's transformer weights with every f32 tensor as f16: the half-precision variant
/// the hub holds beside the full-precision file.
fn fp16_variant(file: &Path) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(file).expect("weights");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let (dtype, data) = if view.dtype() == Dtype::F32 {
            let halves: Vec<u8> = view
                .data()
                .chunks_exact(4)
                .flat_map(|c| {
                    let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                    half::f16::from_f32(v).to_le_bytes()
                })
                .collect();
            (Dtype::F16, halves)
        } else {
            (view.dtype(), view.data().to_vec())
        };
        tensors.push((name, view.shape().to_vec(), dtype, data));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, dtype, data)| {
            (
                n.clone(),
                TensorView::new(*dtype, shape.clone(), data).expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// A stand-in for the Hugging Face Hub under `/hub/` (the page's `?hub=`): its API's file
/// listing (`api/models/{id}`) and files (`{id}/resolve/main/{file}`), for three models:
/// `test/tiny` (the tiny aMUSEd fixture, its transformer also as an fp16 variant),
/// `test/huge` (one safetensors file whose header declares a 1.5 GiB tensor; only its header
/// is ever served) and `test/vast` (files the listing says are 5 GB in all). Any other id is a
/// 404, as the hub answers.
fn fake_hub(path: &str) -> (&'static str, Vec<u8>, &'static str) {
    if let Ok(mut served) = HUB_SERVED.lock() {
        served.push(path.to_owned());
    }
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused/tiny-a/model");
    let transformer = tiny.join("transformer/diffusion_pytorch_model.safetensors");
    let fp16 = "transformer/diffusion_pytorch_model.fp16.safetensors";
    let huge_header = || {
        let n: u64 = 3 << 29;
        let json = format!(
            r#"{{"weight":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{n}]}}}}"#,
            n / 4
        );
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b
    };
    let listing = |files: Vec<(String, u64)>| {
        let siblings: Vec<serde_json::Value> = files
            .into_iter()
            .map(|(n, size)| serde_json::json!({"rfilename": n, "size": size}))
            .collect();
        serde_json::to_vec(&serde_json::json!({ "siblings": siblings })).expect("json")
    };
    let json = "application/json";
    match path {
        "api/models/test/tiny" => {
            let mut files = Vec::new();
            for entry in walk(&tiny) {
                let name = entry
                    .strip_prefix(&tiny)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned();
                let size = std::fs::metadata(&entry).map_or(0, |m| m.len());
                files.push((name, size));
            }
            files.push((fp16.to_owned(), fp16_variant(&transformer).len() as u64));
            ("200 OK", listing(files), json)
        }
        "api/models/test/huge" => (
            "200 OK",
            listing(vec![
                ("model_index.json".into(), 2),
                (
                    "transformer/diffusion_pytorch_model.safetensors".into(),
                    huge_header().len() as u64 + (3 << 29),
                ),
            ]),
            json,
        ),
        "api/models/test/vast" => (
            "200 OK",
            listing(vec![
                ("model_index.json".into(), 2),
                (
                    "transformer/diffusion_pytorch_model.safetensors".into(),
                    5_000_000_000,
                ),
            ]),
            json,
        ),
        "test/huge/resolve/main/transformer/diffusion_pytorch_model.safetensors" => {
            ("200 OK", huge_header(), "application/octet-stream")
        }
        p => match p.strip_prefix("test/tiny/resolve/main/") {
            Some(f) if f == fp16 => (
                "200 OK",
                fp16_variant(&transformer),
                "application/octet-stream",
            ),
            Some(f) if !f.contains("..") => match std::fs::read(tiny.join(f)) {
                Ok(b) => ("200 OK", b, "application/octet-stream"),
                Err(_) => ("404 Not Found", Vec::new(), json),
            },
            _ => (
                "404 Not Found",
                b"{\"error\":\"Repository not found\"}".to_vec(),
                json,
            ),
        },
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
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

/// A browser of its own for test `name` (two on one profile would be one browser).
fn browser(name: &str) -> (Browser, u16) {
    let profile = common::tmp(&format!("chromium-profile-{name}"));
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
    /// The page's console lines and uncaught exceptions so far (printed when a test fails).
    console: Vec<String>,
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
        let mut page = Self {
            ws,
            id: 0,
            console: Vec::new(),
        };
        page.call("Runtime.enable", serde_json::json!({}));
        page
    }

    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.id += 1;
        let msg = serde_json::json!({"id": self.id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .expect("send");
        loop {
            let m = self.ws.read().expect("read");
            let Some(v) = m
                .to_text()
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            else {
                continue;
            };
            if v["id"] == self.id {
                return v;
            }
            match v["method"].as_str() {
                Some("Runtime.consoleAPICalled") => {
                    let args = v["params"]["args"].as_array().cloned().unwrap_or_default();
                    let line: Vec<String> = args
                        .iter()
                        .map(|a| {
                            a["value"]
                                .as_str()
                                .map_or_else(|| a["value"].to_string(), str::to_owned)
                        })
                        .collect();
                    self.console.push(line.join(" "));
                }
                Some("Runtime.exceptionThrown") => {
                    self.console
                        .push(v["params"]["exceptionDetails"].to_string());
                }
                _ => {}
            }
        }
    }

    /// Opens `url` and waits for its run to end: the title then (` — done` or ` — error: …`).
    fn run(&mut self, url: &str) -> String {
        self.call("Page.navigate", serde_json::json!({ "url": url }));
        self.wait_for_title()
    }

    /// Waits for the page's run to end: the title then (` — done` or ` — error: …`).
    fn wait_for_title(&mut self) -> String {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            let t = self.eval("document.title");
            if t != last {
                eprintln!("{:.1} s: {t}", start.elapsed().as_secs_f64());
                last.clone_from(&t);
            }
            if t.ends_with(" — done") || t.contains(" — error") {
                eprintln!("console:\n{}", self.console.join("\n"));
                self.console.clear();
                return t;
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "no result after 10 minutes (title {t:?})"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Waits until `expression` evaluates to `want` (at most 2 minutes).
    fn wait_for(&mut self, expression: &str, want: &str) {
        let start = Instant::now();
        while self.eval(expression) != want {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{expression} is not {want:?} after 2 minutes (title {:?})\nconsole:\n{}",
                self.eval("document.title"),
                self.console.join("\n")
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn eval(&mut self, expression: &str) -> String {
        let v = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        v["result"]["result"]["value"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The web build served on 127.0.0.1 (its port), a browser of its own for test `name`, and a
/// DevTools session on its page.
fn open(name: &str) -> (Browser, u16, Page) {
    assert!(
        site().join("index.html").is_file(),
        "no web build: run tools/web/build.sh"
    );
    let http = serve(site());
    let (browser, devtools) = browser(name);
    let page = Page::open(devtools);
    (browser, http, page)
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
    let (_browser, http, mut page) = open("render");
    // Both stages of the default model; the super-resolution stage in 2 steps (its default 8
    // would take SwiftShader over a minute more, for the same code path).
    let url =
        format!("http://127.0.0.1:{http}/?prompt=red%20apple&seed=3&steps=12&sr-steps=2&run=1");
    let start = Instant::now();
    let title = page.run(&url);
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
        "--sr-steps",
        "2",
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

#[test]
#[ignore = "needs tools/web/build.sh and chromium; CI runs it with --ignored"]
fn the_page_opens_hub_models_and_says_why_it_cannot() {
    let (_browser, http, mut page) = open("hub");
    let hub = format!("http://127.0.0.1:{http}/hub");
    let url = |q: &str| format!("http://127.0.0.1:{http}/?hub={hub}&{q}");
    // A hub model: listed, fetched into memory, opened, run.
    let title = page.run(&url("model=test/tiny&prompt=a%20cat&seed=1&steps=4&run=1"));
    assert!(title.ends_with(" — done"), "{title}");
    // The page took the half-precision transformer (widened to f32 on SwiftShader, which has
    // no shader-f16), not the full-precision file beside it.
    let served = HUB_SERVED.lock().expect("lock").clone();
    let took = |f: &str| {
        served
            .iter()
            .any(|s| s == &format!("test/tiny/resolve/main/{f}"))
    };
    assert!(
        took("transformer/diffusion_pytorch_model.fp16.safetensors")
            && !took("transformer/diffusion_pytorch_model.safetensors"),
        "{served:?}"
    );
    let steps = page.eval("document.getElementById('steps').textContent");
    assert_eq!(steps.split_whitespace().count(), 4, "{steps:?}");
    // Compare lanes, from the URL as from the command line: done once both are.
    let title = page.run(&url(
        "model=test/tiny&prompt=a%20cat&seed=1&steps=4&compare=amused:cosine,maskgit:linear&run=1",
    ));
    assert!(title.ends_with(" — done"), "{title}");
    let steps = page.eval("document.getElementById('steps').textContent");
    assert_eq!(steps.split_whitespace().count(), 4, "{steps:?}");
    // Each failure is a message in the page, and the page lives on.
    for (q, want) in [
        (
            "model=nobody/nothing&run=1",
            "nobody/nothing: no such model",
        ),
        ("model=test/huge&run=1", "max_storage_buffer_binding_size"),
        ("model=test/vast&run=1", "more than a page can hold"),
        ("steps=many&run=1", "invalid value 'many'"),
    ] {
        let title = page.run(&url(q));
        assert!(
            title.contains(" — error: ") && title.contains(want),
            "{q}: {title}"
        );
        assert_eq!(
            page.eval("typeof document.body.innerHTML"),
            "string",
            "{q}: the page is alive"
        );
    }
}

#[test]
#[ignore = "needs tools/web/build.sh and chromium; CI runs it with --ignored"]
fn dropped_files_open_in_the_inpaint_panel_and_as_the_model() {
    let (_browser, http, mut page) = open("drop");
    // A fixed page size, so the panel's buttons are where the layout puts them.
    page.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    );
    // The default model's base stage alone (`stages=1`): the super-resolution stage's
    // positions fix its grid, so it cannot outpaint.
    page.call(
        "Page.navigate",
        serde_json::json!({ "url": format!("http://127.0.0.1:{http}/?stages=1") }),
    );
    page.wait_for("document.getElementById('model').textContent", "emoji");
    // A 64 px image dropped (handed over as the drop handler does) opens in the inpaint panel;
    // Outpaint grows it by the panel's default 4 token columns on the right: 16 × 4 tokens
    // generated, the rest kept.
    let script = r#"(async () => {
        const m = await import("./tessera_web.js");
        const r = await fetch("/fixtures/masks/rgb.png");
        m.tessera_dropped_file("", "rgb.png", new Uint8Array(await r.arrayBuffer()));
        m.tessera_dropped_done("");
        return "handed over";
    })()"#;
    assert_eq!(page.eval(script), "handed over");
    std::thread::sleep(Duration::from_secs(2));
    // The Outpaint button of the panel in a 1280 × 800 page.
    for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
        page.call(
            "Input.dispatchMouseEvent",
            serde_json::json!({"type": kind, "x": 763, "y": 544, "button": "left", "clickCount": 1}),
        );
    }
    let title = page.wait_for_title();
    assert!(
        title.ends_with(" — done"),
        "{title} (is the Outpaint button still at (763, 544)?)"
    );
    let steps = page.eval("document.getElementById('steps').textContent");
    let generated: usize = steps
        .split_whitespace()
        .map(|n| n.parse::<usize>().expect("a count"))
        .sum();
    assert_eq!(
        generated,
        16 * 4,
        "tokens generated by the outpaint: {steps:?}"
    );
    // What the page's drop handler does once it has walked a dropped folder (a synthetic drop
    // event has no folder entries to walk): each file to the app with its path, then done.
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused/tiny-a/model");
    let files: Vec<String> = walk(&tiny)
        .iter()
        .map(|p| {
            p.strip_prefix(&tiny)
                .expect("inside")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let script = format!(
        r#"(async () => {{
            const m = await import("./tessera_web.js");
            for (const f of {files:?}) {{
                const r = await fetch("/hub/test/tiny/resolve/main/" + f);
                m.tessera_dropped_file("tiny", f, new Uint8Array(await r.arrayBuffer()));
            }}
            m.tessera_dropped_done("tiny");
            return "handed over";
        }})()"#
    );
    assert_eq!(page.eval(&script), "handed over");
    page.wait_for(
        "document.getElementById('model').textContent",
        "/dropped/tiny",
    );
    // Ctrl+Enter on the canvas: Generate.
    page.eval("document.getElementById('tessera').focus(), 'focused'");
    for kind in ["rawKeyDown", "keyUp"] {
        page.call(
            "Input.dispatchKeyEvent",
            serde_json::json!({
                "type": kind, "modifiers": 2, "key": "Enter", "code": "Enter",
                "windowsVirtualKeyCode": 13
            }),
        );
    }
    let title = page.wait_for_title();
    assert!(title.ends_with(" — done"), "{title}");
    let steps = page.eval("document.getElementById('steps').textContent");
    let fixed: usize = steps
        .split_whitespace()
        .map(|n| n.parse::<usize>().expect("a count"))
        .sum();
    assert!(fixed > 0, "tokens fixed per step: {steps:?}");
}
