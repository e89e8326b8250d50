//! Helpers shared by the end-to-end tests: a free port, and the events the `files` destination wrote.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

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
/// `dir/out`, listening on `port`; returns its path.
pub fn write_config(dir: &Path, port: u16) -> PathBuf {
    let data = dir.join("data");
    let out = dir.join("out");
    let cfg = format!(
        r#"data_dir: {data}
collector:
  listen: 127.0.0.1:{port}
sources:
  - id: web
    write_keys: ["test-key"]
destinations:
  - id: out
    batch: {{ max_events: 500, max_age_ms: 200 }}
    sink:
      type: files
      path: {out}
"#,
        data = data.display(),
        out = out.display(),
    );
    let path = dir.join("sluice.yaml");
    fs::write(&path, cfg).unwrap();
    path
}
