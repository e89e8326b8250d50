//! Test helpers: the real `sluice` collector started from its debug binary, the events its
//! `files` destination wrote, and a tiny scripted HTTP server for status codes the collector
//! only gives under conditions a test cannot cheaply create (429/503 with `Retry-After`).
#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `target/debug` of this build (the test binary lives in `target/debug/deps`).
fn target_debug() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// The collector binary: `$SLUICE_BIN`, else `sluice` next to this build, built on demand
/// (`cargo test --workspace` has built it already).
pub fn sluice_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SLUICE_BIN") {
        return PathBuf::from(p);
    }
    let bin = target_debug().join("sluice");
    // Tests run in parallel: one of them builds, the others wait for it.
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        if bin.exists() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../../Cargo.toml");
        let status = Command::new(cargo)
            .args(["build", "-p", "sluice", "--bin", "sluice", "--manifest-path"])
            .arg(manifest)
            .status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "building the collector failed; build it first with `cargo build -p sluice` or set SLUICE_BIN"
        );
    });
    bin
}

/// An example binary of this crate (`cargo test` builds the examples).
pub fn example_bin(name: &str) -> PathBuf {
    let p = target_debug().join("examples").join(name);
    assert!(p.exists(), "{} missing: run `cargo test -p sluice-analytics` (it builds the examples)", p.display());
    p
}

pub const WRITE_KEY: &str = "test-key";

/// A running collector with a `files` destination; killed on drop.
pub struct Collector {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Collector {
    pub fn start() -> Collector {
        Collector::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Collector {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Collector {
            port,
            dir,
            child: None,
        };
        c.restart();
        c
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("sluice.log")
    }

    pub fn restart(&mut self) {
        let d = self.dir.path();
        let cfg = format!(
            "data_dir: {data}\ncollector:\n  listen: 127.0.0.1:{port}\nsources:\n  - id: web\n    write_keys: [\"{WRITE_KEY}\"]\ndestinations:\n  - id: out\n    batch: {{ max_events: 1000, max_age_ms: 100 }}\n    sink:\n      type: files\n      path: {out}\n",
            data = d.join("data").display(),
            port = self.port,
            out = d.join("out").display(),
        );
        let config = d.join("sluice.yaml");
        fs::write(&config, cfg).unwrap();
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        let mut child = Command::new(sluice_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn sluice");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = child.try_wait() {
                panic!("sluice exited with {s}: {}", fs::read_to_string(self.log()).unwrap_or_default());
            }
            if http_status(self.port, "GET /health HTTP/1.0\r\n\r\n") == Some(200) {
                break;
            }
            assert!(Instant::now() < deadline, "sluice not healthy in 30 s");
            thread::sleep(Duration::from_millis(50));
        }
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every event the files destination wrote so far, in log order.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        let mut files = Vec::new();
        collect(&self.dir.path().join("out"), &mut files);
        // Named `{first_offset:020}-{last_offset:020}`: the name orders them.
        files.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        let mut events = Vec::new();
        for f in files {
            let Ok(file) = fs::File::open(&f) else { continue };
            for line in BufReader::new(flate2::read::MultiGzDecoder::new(file)).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str(&line) {
                    events.push(v);
                }
            }
        }
        events
    }

    /// Waits until the destination holds at least `n` events (the router batches for 100 ms).
    pub fn wait_delivered(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let ev = self.delivered();
            if ev.len() >= n || Instant::now() > deadline {
                return ev;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect(&p, out);
        } else if name.ends_with(".ndjson.gz") {
            out.push(p);
        }
    }
}

fn http_status(port: u16, req: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.split(' ').nth(1)?.parse().ok()
}

/// One request the scripted server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: Vec<(String, String)>,
    /// The decoded (gunzipped) JSON body.
    pub body: serde_json::Value,
    pub status: u16,
}

/// Decides the answer to a request: (status, extra headers, body).
pub type Script = Box<dyn FnMut(&serde_json::Value) -> (u16, Vec<(String, String)>, String) + Send>;

/// A minimal HTTP/1.1 server on 127.0.0.1 answering each request as `script` says.
pub struct Scripted {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Received>>>,
}

impl Scripted {
    pub fn start(script: Script) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let l2 = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script) = (l2.clone(), script.clone());
                thread::spawn(move || serve(stream, &log, &script));
            }
        });
        Scripted { port, log }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, log: &Mutex<Vec<Received>>, script: &Mutex<Script>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let gz = headers.iter().any(|(k, v)| k == "content-encoding" && v == "gzip");
        let raw = if gz {
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut s).unwrap();
            s
        } else {
            body
        };
        let json: serde_json::Value = serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null);
        let (status, extra, text) = (script.lock().unwrap())(&json);
        log.lock().unwrap().push(Received {
            at: Instant::now(),
            headers,
            body: json,
            status,
        });
        let mut resp = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n", text.len());
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&text);
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// Polls `f` until it holds or `within` passes; returns whether it held.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    f()
}

pub fn ids(events: &[serde_json::Value]) -> std::collections::HashSet<String> {
    events
        .iter()
        .filter_map(|e| e["messageId"].as_str().map(String::from))
        .collect()
}

