//! `log:`: the backend choice, Kafka's settings, and the errors bad ones get.

use super::*;

fn with_log(log: &str) -> String {
    format!(
        "data_dir: /tmp/sluice-test\ncollector:\n  listen: 127.0.0.1:8080\n{log}sources:\n  - id: web\n    write_keys: [k]\n"
    )
}

fn parse_log(log: &str) -> Result<Config, ConfigError> {
    parse(&with_log(log), "t.yaml", |v| (v == "KAFKA_PASSWORD").then(|| "s3cret".to_string()))
}

#[test]
fn an_existing_embedded_log_block_loads_as_before() {
    let c = parse_log("log:\n  dir: /tmp/l\n  segment_bytes: 8192\n  disk_budget_bytes: 65536\n").unwrap();
    assert_eq!(c.log.backend, Backend::Embedded);
    let e = c.log.embedded();
    assert_eq!((e.dir, e.segment_bytes, e.disk_budget_bytes), (PathBuf::from("/tmp/l"), 8192, 65536));
    let c = parse_log("").unwrap();
    assert_eq!(c.log.embedded().dir, PathBuf::from("/tmp/sluice-test/log"));
    assert_eq!(c.log.embedded().disk_budget_bytes, 10 << 30);
}

#[test]
fn a_kafka_block_loads_with_defaults_and_secrets_from_the_environment() {
    let c = parse_log(
        "log:\n  backend: kafka\n  kafka:\n    brokers: ${BROKERS:-127.0.0.1:9092}\n    client:\n      security.protocol: sasl_ssl\n      sasl.mechanism: SCRAM-SHA-512\n      sasl.username: sluice\n      sasl.password: ${KAFKA_PASSWORD}\n      socket.timeout.ms: 30000\n",
    )
    .unwrap();
    assert_eq!(c.log.backend, Backend::Kafka);
    let k = c.log.kafka.unwrap();
    assert_eq!(k.brokers, "127.0.0.1:9092");
    assert_eq!((k.topic.as_str(), k.partitions, k.replication_factor), ("sluice-events", 6, 1));
    assert_eq!(k.client["sasl.password"].to_string(), "s3cret");
    assert_eq!(k.client["socket.timeout.ms"].to_string(), "30000");
}

#[test]
fn bad_log_settings_get_clear_errors() {
    let e = parse_log("log:\n  backend: pulsar\n").unwrap_err().to_string();
    assert!(e.contains("unknown variant `pulsar`, expected `embedded` or `kafka`"), "{e}");

    let e = parse_log("log:\n  backend: kafka\n").unwrap_err().to_string();
    assert!(e.contains("backend: kafka needs a kafka: block"), "{e}");

    let e = parse_log("log:\n  backend: kafka\n  kafka:\n    topic: t\n").unwrap_err().to_string();
    assert!(e.contains("missing field `brokers`"), "{e}");

    let e = parse_log("log:\n  backend: kafka\n  kafka:\n    brokers: \"\"\n").unwrap_err().to_string();
    assert!(e.contains("kafka.brokers is empty"), "{e}");

    // librdkafka checks every property and value; its message names the property.
    let e = parse_log("log:\n  backend: kafka\n  kafka:\n    brokers: b:9092\n    client:\n      no.such.setting: 1\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("no.such.setting"), "{e}");
    let e = parse_log("log:\n  backend: kafka\n  kafka:\n    brokers: b:9092\n    client:\n      security.protocol: carrier_pigeon\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("security.protocol"), "{e}");

    let e = parse_log("log:\n  backend: kafka\n  kafka:\n    brokers: b:9092\n    client:\n      enable.idempotence: false\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("kafka.client.enable.idempotence is set by Sluice itself"), "{e}");

    let e = parse_log("log:\n  backend: kafka\n  segment_bytes: 8192\n  kafka:\n    brokers: b:9092\n").unwrap_err().to_string();
    assert!(e.contains("belong to the embedded log"), "{e}");

    let e = parse_log("log:\n  kafka:\n    brokers: b:9092\n").unwrap_err().to_string();
    assert!(e.contains("backend is embedded"), "{e}");

    let e = parse_log("log:\n  backend: kafka\n  kafka:\n    brokers: b:9092\n    partitions: 0\n").unwrap_err().to_string();
    assert!(e.contains("partitions must be at least 1"), "{e}");
}
