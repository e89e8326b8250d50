//! Kafka as Sluice's event log, behind the `sluice-eventlog` contract ([`LogWriter`],
//! [`LogSource`]), for running collectors and routers as separate, scaled-out processes.
//!
//! # What is stored
//! One topic (`topic`, default `sluice-events`). A message's value is exactly the record payload
//! the embedded log stores (`sluice_eventlog::decode_payload` reads both), so there is one record
//! format; its key is the event's user (`userId`, else `anonymousId`), so one user's events land
//! in one partition and stay in order.
//!
//! # Guarantees
//! - Producer: `acks=all` and `enable.idempotence=true`; [`LogWriter::append`] returns once the
//!   brokers acknowledged every message of the batch. Its queue is bounded
//!   (`queue.buffering.max.messages` / `queue.buffering.max.kbytes`) and every message has a
//!   delivery timeout (`message.timeout.ms`): a full queue is [`LogError::Backlog`], an
//!   unreachable cluster or a timed-out delivery [`LogError::Unavailable`]; the collector answers
//!   both with 503 and `Retry-After`. While librdkafka reports every broker down, appends are
//!   refused at once instead of waiting out the timeout; a metadata probe every second lifts that.
//! - Consumers: one consumer group per destination, `sluice-<destination id>`; offsets are
//!   committed only by the router after delivery or dead-lettering (auto-commit off), and on a
//!   rebalance the offsets delivered so far are committed for the partitions being revoked. A
//!   batch read but not yet delivered when its partition moves is delivered again by the new
//!   owner (at-least-once: a duplicate, never a gap).
//! - Readers read every partition assigned to them; the router keeps partitions apart in its
//!   batches, so output names (`p<partition>-<first>-<last>`) stay deterministic.
//!
//! The topic is created at start-up when missing, with `partitions` and `replication_factor`
//! (the broker must allow CreateTopics; with an existing topic both are left as they are).

mod reader;
mod writer;

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::BaseProducer;
use serde::Deserialize;
use sluice_eventlog::LogError;

pub use reader::KafkaSource;
pub use writer::KafkaWriter;

/// Settings Sluice sets itself because its guarantees rest on them; `client:` may not change them.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "acks",
    "request.required.acks",
    "enable.idempotence",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "transactional.id",
];

/// How long start-up waits for the brokers to answer before giving up with an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `log.kafka:` in the YAML config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of the topic when Sluice creates it: the most routers of one destination that
    /// can share the work.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Replication factor of the topic when Sluice creates it (3 in production).
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// librdkafka settings passed through as they are (`security.protocol`, `sasl.mechanism`,
    /// `sasl.username`, `sasl.password`, `ssl.ca.location`, timeouts...), for the producer and
    /// the consumers alike. Values may be strings, numbers or booleans.
    #[serde(default)]
    pub client: BTreeMap<String, ClientValue>,
}

/// A librdkafka setting's value as written in YAML.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ClientValue {
    Text(String),
    Number(serde_json::Number),
    Flag(bool),
}

impl std::fmt::Display for ClientValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientValue::Text(s) => f.write_str(s),
            ClientValue::Number(n) => write!(f, "{n}"),
            ClientValue::Flag(b) => write!(f, "{b}"),
        }
    }
}

fn default_topic() -> String {
    "sluice-events".into()
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            topic: default_topic(),
            partitions: default_partitions(),
            replication_factor: default_replication(),
            client: BTreeMap::new(),
        }
    }

    /// Checks that need no broker, librdkafka's own check of every setting included (it knows
    /// every property and its allowed values): what `sluice validate` runs.
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers is empty: give host:port of at least one broker".into());
        }
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 249
            && self.topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            && self.topic != "."
            && self.topic != "..";
        if !topic_ok {
            return Err(format!("kafka.topic {:?} must be 1-249 of [A-Za-z0-9._-]", self.topic));
        }
        if self.partitions < 1 {
            return Err(format!("kafka.partitions must be at least 1, got {}", self.partitions));
        }
        if self.replication_factor < 1 {
            return Err(format!("kafka.replication_factor must be at least 1, got {}", self.replication_factor));
        }
        for key in self.client.keys() {
            if RESERVED.contains(&key.as_str()) {
                return Err(format!(
                    "kafka.client.{key} is set by Sluice itself (brokers come from kafka.brokers; acks, idempotence, groups and commits carry its delivery guarantees)"
                ));
            }
        }
        // Creating a client makes librdkafka check every property and value, without connecting
        // yet; its message names the property.
        self.producer_config()
            .create::<BaseProducer>()
            .map(drop)
            .map_err(|e| format!("kafka.client: {e}"))
    }

    /// The settings shared by producer, consumers and admin client.
    fn base_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.client {
            c.set(k, v.to_string());
        }
        c
    }

    pub(crate) fn producer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        // Defaults first, so `client:` can tune them; guarantees last, so it cannot.
        c.set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "10000")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (k, v) in self.base_config().config_map() {
            c.set(k, v);
        }
        c.set("acks", "all").set("enable.idempotence", "true");
        c
    }

    pub(crate) fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("partition.assignment.strategy", "range,roundrobin")
            .set("fetch.wait.max.ms", "100");
        for (k, v) in self.base_config().config_map() {
            c.set(k, v);
        }
        c.set("group.id", group).set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        c
    }
}

/// The consumer group of a destination.
pub fn group_of(destination: &str) -> String {
    format!("sluice-{destination}")
}

/// Checks the brokers answer and creates the topic if it is missing. Called by both sides at
/// start-up, so whichever role starts first makes it.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<(), LogError> {
    config.validate().map_err(LogError::Config)?;
    let admin: AdminClient<DefaultClientContext> =
        config.base_config().create().map_err(|e| LogError::Config(format!("kafka.client: {e}")))?;
    // Blocking, once at start-up: nothing else runs yet that it could hold up.
    let metadata = admin.inner().fetch_metadata(None, CONNECT_TIMEOUT).map_err(|e| {
        LogError::Unavailable(format!(
            "cannot reach the Kafka brokers at {} within {}s: {e}",
            config.brokers,
            CONNECT_TIMEOUT.as_secs()
        ))
    })?;
    if metadata.topics().iter().any(|t| t.name() == config.topic && t.error().is_none() && !t.partitions().is_empty()) {
        return Ok(());
    }
    let topic = NewTopic::new(&config.topic, config.partitions, TopicReplication::Fixed(config.replication_factor));
    let options = AdminOptions::new().operation_timeout(Some(CONNECT_TIMEOUT)).request_timeout(Some(CONNECT_TIMEOUT));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| LogError::Unavailable(format!("creating topic {}: {e}", config.topic)))?;
    for result in results {
        match result {
            Ok(_) => tracing::info!(topic = %config.topic, partitions = config.partitions, replication = config.replication_factor, "created the Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(LogError::Unavailable(format!("creating topic {name}: {code}"))),
        }
    }
    Ok(())
}
