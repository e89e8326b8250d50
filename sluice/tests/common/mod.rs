//! Helpers shared by the end-to-end tests: a free port, the events the `files` destination wrote,
//! a config, and starting the `sluice` binary and waiting until it answers.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[allow(dead_code)]
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // Files still being written have a leading dot until they are renamed.
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out);
        } else if name.ends_with(".ndjson.gz") {
            out.push(p);
        }
    }
}

/// Every event in the gzip NDJSON files under `out_dir`.
#[allow(dead_code)] // not every test binary reads the output
pub fn delivered_events(out_dir: &Path) -> Vec<serde_json::Value> {
    let mut files = Vec::new();
    collect_files(out_dir, &mut files);
    let mut events = Vec::new();
    for f in files {
        let Ok(file) = fs::File::open(&f) else { continue };
        let reader = BufReader::new(flate2::read::MultiGzDecoder::new(file));
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                events.push(v);
            }
        }
    }
    events
}

/// Writes a config with one source (write key `test-key`) and one `files` destination under
/// `dir/out`, listening on `port` (the admin listener on another free port, see [`admin_url`]);
/// returns its path.
pub fn write_config(dir: &Path, port: u16) -> PathBuf {
    let destination = format!(
        "  - id: out\n    batch: {{ max_events: 500, max_age_ms: 200 }}\n    sink:\n      type: files\n      path: {}\n",
        dir.join("out").display()
    );
    write_config_with(dir, port, &destination)
}

/// Like [`write_config`], with `destinations` (the YAML list items, indented by two spaces) as
/// the destinations.
pub fn write_config_with(dir: &Path, port: u16, destinations: &str) -> PathBuf {
    let cfg = format!(
        r#"data_dir: {data}
collector:
  listen: 127.0.0.1:{port}
admin:
  listen: 127.0.0.1:{admin}
sources:
  - id: web
    write_keys: ["test-key"]
destinations:
{destinations}"#,
        data = dir.join("data").display(),
        admin = free_port(),
    );
    let path = dir.join("sluice.yaml");
    fs::write(&path, cfg).unwrap();
    path
}

/// Starts `sluice run --config config`, appending its output to `log` (kept across restarts).
#[allow(dead_code)] // sdk_clients.rs starts its server its own way
pub fn start_server(config: &Path, log: &Path) -> Child {
    let log = fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn sluice")
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
#[allow(dead_code)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`start_server`], then [`wait_healthy`] on the collector's `port`.
#[allow(dead_code)]
pub fn start_healthy(config: &Path, port: u16, log: &Path) -> Killed {
    let mut child = start_server(config, log);
    wait_healthy(&mut child, port, log);
    Killed(child)
}

/// Waits until `/health` answers 200; panics with the log if the server exits or takes over 30 s.
#[allow(dead_code)]
pub fn wait_healthy(child: &mut Child, port: u16, log: &Path) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "sluice exited early with {status}; log:\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(r) = client.get(format!("http://127.0.0.1:{port}/health")).send() {
            if r.status().as_u16() == 200 {
                return;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "sluice not healthy after 30s; log:\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
}

/// The value of one series in Prometheus text (`name{labels}` exactly as rendered, labels in the
/// order the exporter writes them), or 0 when absent.
#[allow(dead_code)]
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `http://<admin.listen>` of a config file: where `/metrics`, `/ready` and `/dashboard` are.
#[allow(dead_code)]
pub fn admin_url(config: &Path) -> String {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&fs::read_to_string(config).unwrap()).unwrap();
    let listen = yaml["admin"]["listen"].as_str().expect("the test config sets admin.listen");
    format!("http://{listen}")
}

/// The Prometheus text of the admin listener's `/metrics`.
#[allow(dead_code)]
pub fn admin_metrics(config: &Path) -> String {
    reqwest::blocking::get(format!("{}/metrics", admin_url(config))).unwrap().text().unwrap()
}

/// Reads one HTTP/1.1 request from `reader` and returns its body (`Content-Length` bytes), or
/// `None` when the connection ends first: for the tests' small hand-written receivers.
#[allow(dead_code)]
pub fn read_request_body(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}
