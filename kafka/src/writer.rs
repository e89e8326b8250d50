//! The producer side: appends acknowledged by the brokers, never buffered without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use sluice_eventlog::{AppendBatch, LogError, LogHealth, LogWriter};

use crate::KafkaConfig;

/// What the producer's callbacks and appends learned about the cluster.
#[derive(Default)]
struct State {
    /// Set while librdkafka reports every broker down; appends are refused at once meanwhile.
    all_down: Mutex<Option<String>>,
    /// The last append found the queue full.
    queue_full: AtomicBool,
    /// Why the last append failed, cleared by the next that succeeds.
    last_error: Mutex<Option<String>>,
}

struct Context {
    state: Arc<State>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            tracing::error!(%reason, "every Kafka broker is down; ingest answers 503 until one is back");
            *self.state.all_down.lock().unwrap() = Some(reason.to_string());
        } else {
            tracing::warn!(%error, %reason, "librdkafka");
        }
    }
}

/// Appends to the topic through one idempotent producer shared by every request.
#[derive(Clone)]
pub struct KafkaWriter {
    producer: Arc<FutureProducer<Context>>,
    topic: Arc<str>,
    state: Arc<State>,
}

impl KafkaWriter {
    /// Checks the brokers answer, creates the topic if missing, and starts the producer.
    pub async fn open(config: &KafkaConfig) -> Result<KafkaWriter, LogError> {
        crate::ensure_topic(config).await?;
        let state = Arc::new(State::default());
        let producer: FutureProducer<Context> = config
            .producer_config()
            .create_with_context(Context { state: state.clone() })
            .map_err(|e| LogError::Config(format!("kafka.client: {e}")))?;
        let producer = Arc::new(producer);
        spawn_probe(Arc::downgrade(&producer), config.topic.clone(), state.clone());
        Ok(KafkaWriter { producer, topic: Arc::from(config.topic.as_str()), state })
    }

    /// Waits until every queued message is delivered or timed out (at shutdown).
    pub fn flush(&self, timeout: Duration) {
        let _ = self.producer.flush(timeout);
    }
}

/// While every broker is reported down, asks for metadata once a second; the first answer lifts
/// the refusal. A thread of its own: the probe blocks, and must not need a runtime.
fn spawn_probe(producer: std::sync::Weak<FutureProducer<Context>>, topic: String, state: Arc<State>) {
    let spawned = std::thread::Builder::new().name("sluice-kafka-probe".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(producer) = producer.upgrade() else { return };
        if state.all_down.lock().unwrap().is_none() {
            continue;
        }
        if producer.client().fetch_metadata(Some(&topic), Duration::from_secs(1)).is_ok() {
            tracing::info!("a Kafka broker answers again; ingest resumes");
            *state.all_down.lock().unwrap() = None;
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the Kafka broker probe");
    }
}

#[async_trait]
impl LogWriter for KafkaWriter {
    async fn append(&self, batch: AppendBatch) -> Result<(), LogError> {
        if let Some(reason) = self.state.all_down.lock().unwrap().clone() {
            return Err(LogError::Unavailable(format!("every Kafka broker is down: {reason}")));
        }
        // Everything is queued first and awaited after: awaiting each send before queueing the
        // next would send one message per linger window.
        let mut deliveries = Vec::with_capacity(batch.len() as usize);
        for stored in batch.records() {
            // The user, from the head the collector read while validating the event.
            let record = FutureRecord::to(&self.topic).payload(stored.payload).key(stored.user.as_bytes());
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    self.state.queue_full.store(true, Ordering::Relaxed);
                    // What was queued goes out anyway; the request is answered 503 and retried,
                    // which at-least-once allows.
                    return Err(LogError::Backlog("the Kafka producer's queue is full".into()));
                }
                Err((e, _)) => return Err(self.failed(format!("queueing a message: {e}"))),
            }
        }
        self.state.queue_full.store(false, Ordering::Relaxed);
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.failed(format!("the brokers did not acknowledge a message: {e}"))),
                Err(_) => return Err(LogError::Closed),
            }
        }
        *self.state.last_error.lock().unwrap() = None;
        Ok(())
    }

    fn health(&self) -> LogHealth {
        let write_error = match self.state.all_down.lock().unwrap().clone() {
            Some(reason) => Some(format!("every Kafka broker is down: {reason}")),
            None => self.state.last_error.lock().unwrap().clone(),
        };
        LogHealth {
            backend: "kafka",
            next_offset: None,
            size_bytes: 0,
            budget_bytes: 0,
            refusing_appends: self.state.queue_full.load(Ordering::Relaxed),
            write_error,
        }
    }
}

impl KafkaWriter {
    fn failed(&self, message: String) -> LogError {
        *self.state.last_error.lock().unwrap() = Some(message.clone());
        LogError::Unavailable(message)
    }
}
