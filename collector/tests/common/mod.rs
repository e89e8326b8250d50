//! Shared by the collector's HTTP tests: a collector over a fresh event log, the actix-web app
//! around it, and what the log holds afterwards (read back through a reader, as the router would).
#![allow(dead_code)] // each test file uses a part

use std::io::Write;
use std::time::Duration;

use actix_web::web;
use base64::Engine;
use sluice_collector::{Collector, CollectorConfig, SourceConfig};
use sluice_eventlog::{EventLog, LogConfig, Record};

pub struct Setup {
    _dir: tempfile::TempDir,
    pub log: EventLog,
    pub data: web::Data<Collector>,
}

/// A collector for `sources` over a new log in a temporary directory.
pub fn setup_with(config: CollectorConfig, sources: &[SourceConfig], segment_bytes: u64, disk_budget_bytes: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(LogConfig { dir: dir.path().into(), segment_bytes, disk_budget_bytes }).unwrap();
    let data = web::Data::new(Collector::new(config, sources, log.clone()).unwrap());
    Setup { _dir: dir, log, data }
}

/// The app serving every collector route, built the way `sluice run` builds it.
macro_rules! app {
    ($s:expr) => {
        actix_web::test::init_service(actix_web::App::new().configure(sluice_collector::configure($s.data.clone()))).await
    };
}

/// Every record in the log, oldest first.
pub async fn stored_records(log: &EventLog) -> Vec<Record> {
    let mut r = log.reader("check").unwrap();
    let mut out = Vec::new();
    loop {
        let got = r.read(1000, 1 << 20, Duration::from_millis(20)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

/// Every stored event, parsed.
pub async fn stored(log: &EventLog) -> Vec<serde_json::Value> {
    stored_records(log).await.iter().map(|rec| serde_json::from_slice(&rec.event).unwrap()).collect()
}

/// The `Authorization` header SDKs send: the write key as Basic username, empty password.
pub fn basic(key: &str) -> (&'static str, String) {
    ("Authorization", format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))))
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
