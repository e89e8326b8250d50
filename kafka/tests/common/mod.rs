//! What the Kafka tests share: the broker to talk to (tansu, started by `scripts/backends.sh`),
//! and fresh topic and group names so runs never see each other's records.
#![allow(dead_code)] // each test file uses a different part

use std::net::TcpStream;
use std::time::Duration;

/// `SLUICE_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`; panics with what to do when no broker
/// answers there (a test that needs Kafka must not pass without one).
pub fn brokers() -> String {
    let brokers = std::env::var("SLUICE_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let first = brokers.split(',').next().unwrap_or_default().to_string();
    let addr = first.parse().unwrap_or_else(|_| panic!("SLUICE_TEST_KAFKA_BROKERS={brokers}: not host:port"));
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "no Kafka broker at {brokers} (SLUICE_TEST_KAFKA_BROKERS): run `scripts/backends.sh start` (it builds and starts tansu) and `eval \"$(scripts/backends.sh env)\"` first"
        );
    }
    brokers
}

/// The tansu binary (`SLUICE_TEST_TANSU`), for tests that start a broker of their own.
pub fn tansu() -> String {
    let path = std::env::var("SLUICE_TEST_TANSU").unwrap_or_else(|_| {
        let default = format!("{}/.cache/sluice/tansu/bin/tansu", std::env::var("HOME").unwrap_or_default());
        if std::path::Path::new(&default).exists() {
            default
        } else {
            panic!("SLUICE_TEST_TANSU is not set and tansu is not at {default}: run `scripts/backends.sh start` and `eval \"$(scripts/backends.sh env)\"` first")
        }
    });
    assert!(std::path::Path::new(&path).exists(), "SLUICE_TEST_TANSU={path} does not exist");
    path
}

/// A name no other run used: topics and groups live as long as the broker.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
