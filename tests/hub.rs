//! `--model owner/name` from a hub: a small HTTP server on 127.0.0.1 serves the tiny-b fixture in
//! the Hugging Face Hub's URL layout (`/api/models/{id}/revision/main`,
//! `/{id}/resolve/main/{file}` with Range requests, `x-repo-commit` and `etag` headers), and
//! tessera downloads it into a fresh cache (`HF_HOME`), renders from it, then runs offline.
//! No internet is involved.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;

const ID: &str = "test-org/tiny-b";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/amused/tiny-b/model")
}

/// Every file under `root`, by its path relative to it with `/` separators.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).expect("read fixture").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, root, out);
            } else {
                let rel = p.strip_prefix(root).expect("under root");
                let name = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.insert(name, std::fs::read(&p).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// A request the mock hub saw: the path and the Authorization header.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    auth: Option<String>,
}

struct MockHub {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MockHub {
    /// Serves `files` as repository `ID` at commit `SHA`; the listing also names a picture and a
    /// PyTorch copy of the transformer weights, which are not served (a download of either
    /// fails), so a client that fetches them fails the test.
    fn start(files: BTreeMap<String, Vec<u8>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = handle(stream, &files, &log);
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

fn handle(
    stream: TcpStream,
    files: &BTreeMap<String, Vec<u8>>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut range = None;
    let mut auth = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.trim_end().split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v.trim().to_owned()),
                "authorization" => auth = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_owned();
    log.lock().expect("log").push(Seen {
        path: path.clone(),
        auth,
    });
    let mut out = stream;
    let info = format!("/api/models/{ID}/revision/main");
    let resolve = format!("/{ID}/resolve/main/");
    if path == info {
        let mut names: Vec<String> = files.keys().cloned().collect();
        names.push("assets/sample.png".into());
        names.push("transformer/diffusion_pytorch_model.bin".into());
        let siblings: Vec<String> = names
            .iter()
            .map(|n| format!("{{\"rfilename\":\"{n}\"}}"))
            .collect();
        let body = format!(
            "{{\"sha\":\"{SHA}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        return respond(
            &mut out,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.as_bytes(),
        );
    }
    if let Some(name) = path.strip_prefix(&resolve)
        && let Some(data) = files.get(name)
    {
        let size = data.len();
        // "bytes=a-b" or "bytes=a-".
        let (start, end) = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .map(|(a, b)| {
                let a: usize = a.parse().unwrap_or(0);
                let b: usize = b
                    .parse()
                    .map_or(size.saturating_sub(1), |b: usize| b.min(size - 1));
                (a, b)
            })
            .unwrap_or((0, size.saturating_sub(1)));
        let etag = format!("\"{:016x}\"", fnv(data));
        let headers = [
            ("x-repo-commit", SHA.to_owned()),
            ("etag", etag),
            ("Content-Range", format!("bytes {start}-{end}/{size}")),
        ];
        let body = if start < size {
            &data[start..=end]
        } else {
            &[][..]
        };
        return respond(&mut out, "206 Partial Content", &headers, body);
    }
    respond(&mut out, "404 Not Found", &[], b"not found")
}

fn respond(
    out: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()?;
    // Let the client finish reading before the socket closes.
    let mut sink = [0u8; 64];
    let _ = out.set_read_timeout(Some(std::time::Duration::from_millis(50)));
    let _ = out.read(&mut sink);
    Ok(())
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `tessera --render OUT --model MODEL --steps 2 --seed 1 --prompt "a cat"` with `env`; the
/// status and stderr.
fn render(model: &str, out: &Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tessera"));
    cmd.args([
        "--render",
        s(out),
        "--model",
        model,
        "--steps",
        "2",
        "--seed",
        "1",
    ])
    .args(["--prompt", "a cat"])
    .env("RUST_LOG", "error")
    .env_remove("HF_TOKEN")
    .env_remove("HF_HUB_OFFLINE")
    .env_remove("HF_HUB_CACHE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("run tessera");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn pixels(p: &Path) -> Vec<u8> {
    image::open(p).expect("open png").to_rgb8().into_raw()
}

#[test]
fn hub_id_downloads_into_the_cache_then_runs_offline() {
    let dir = tmp("hub");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let home = dir.join("hf-home");
    let hub = MockHub::start(tree(&fixture()));
    let env = [
        ("HF_ENDPOINT", hub.url.as_str()),
        ("HF_HOME", s(&home)),
        ("HF_TOKEN", "secret"),
    ];

    let from_hub = dir.join("from-hub.png");
    let (ok, err) = render(ID, &from_hub, &env);
    assert!(ok, "{err}");
    assert!(
        err.contains("downloading") && err.contains("files"),
        "announces the download: {err}"
    );
    // The standard cache layout, at the served commit, with every served file.
    let repo = home.join("hub/models--test-org--tiny-b");
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .expect("refs/main")
            .trim(),
        SHA
    );
    let snapshot = repo.join("snapshots").join(SHA);
    assert_eq!(tree(&snapshot), tree(&fixture()));
    // Not the picture or the PyTorch copy; the token went along.
    let seen = hub.seen();
    assert!(
        seen.iter()
            .all(|r| !r.path.ends_with(".png") && !r.path.ends_with(".bin")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|r| r.auth.as_deref() == Some("Bearer secret")),
        "{seen:?}"
    );

    // The same image as from the fixture folder itself.
    let local = dir.join("local.png");
    let (ok, err) = render(s(&fixture()), &local, &[]);
    assert!(ok, "{err}");
    assert_eq!(pixels(&from_hub), pixels(&local));

    // Cached now: offline works and asks the hub nothing.
    let before = hub.seen().len();
    let again = dir.join("again.png");
    let mut offline = env.to_vec();
    offline.push(("HF_HUB_OFFLINE", "1"));
    let (ok, err) = render(ID, &again, &offline);
    assert!(ok, "{err}");
    assert_eq!(hub.seen().len(), before, "an offline run made requests");
    assert_eq!(pixels(&again), pixels(&local));
}

#[test]
fn uncached_hub_ids_offline_or_unknown_are_one_error_line() {
    let dir = tmp("hub-errors");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let home = dir.join("hf-home");
    let hub = MockHub::start(tree(&fixture()));

    // Offline: nothing fetched, one line naming HF_HUB_OFFLINE.
    let out = dir.join("offline.png");
    let env = [
        ("HF_ENDPOINT", hub.url.as_str()),
        ("HF_HOME", s(&home)),
        ("HF_HUB_OFFLINE", "1"),
    ];
    let (ok, err) = render(ID, &out, &env);
    assert!(!ok);
    assert_one_error_line(&err, "HF_HUB_OFFLINE");
    assert!(hub.seen().is_empty(), "offline made requests");
    assert!(!out.exists());

    // An id the hub does not have.
    let out = dir.join("unknown.png");
    let env = [("HF_ENDPOINT", hub.url.as_str()), ("HF_HOME", s(&home))];
    let (ok, err) = render("test-org/missing", &out, &env);
    assert!(!ok);
    assert_one_error_line(&err, "test-org/missing");
    assert!(!out.exists());
}

fn assert_one_error_line(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("Error:") && lines[0].contains(needle),
        "{stderr}"
    );
}
