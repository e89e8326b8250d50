//! The consumer side: one consumer group per destination, commits only after delivery, and a
//! commit of what was delivered when a rebalance takes partitions away.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sluice_eventlog::{
    payload, CorruptRecord, LogCommitter, LogError, LogHealth, LogReader, LogSource, Position, Record,
};

use crate::{group_of, KafkaConfig};

/// Opens readers (consumers) on the topic.
#[derive(Clone)]
pub struct KafkaSource {
    config: KafkaConfig,
}

impl KafkaSource {
    /// Checks the brokers answer and creates the topic if missing.
    pub async fn open(config: &KafkaConfig) -> Result<KafkaSource, LogError> {
        crate::ensure_topic(config).await?;
        Ok(KafkaSource { config: config.clone() })
    }

    /// A reader as the trait gives it, but typed (tests look at its group).
    pub fn consumer(&self, consumer: &str) -> Result<KafkaReader, LogError> {
        let delivered: Delivered = Arc::default();
        let context = RebalanceContext { topic: self.config.topic.clone(), delivered: delivered.clone() };
        let group = group_of(consumer);
        let stream: StreamConsumer<RebalanceContext> = self
            .config
            .consumer_config(&group)
            .create_with_context(context)
            .map_err(|e| LogError::Config(format!("kafka.client: {e}")))?;
        stream
            .subscribe(&[self.config.topic.as_str()])
            .map_err(|e| LogError::Unavailable(format!("subscribing to {}: {e}", self.config.topic)))?;
        tracing::info!(%group, topic = %self.config.topic, "Kafka consumer joined its group");
        Ok(KafkaReader {
            consumer: Arc::new(stream),
            topic: Arc::from(self.config.topic.as_str()),
            next: BTreeMap::new(),
            delivered,
            corrupt: Vec::new(),
            last_source: None,
            last_key_id: None,
        })
    }
}

impl LogSource for KafkaSource {
    fn reader(&self, consumer: &str) -> Result<Box<dyn LogReader>, LogError> {
        Ok(Box::new(self.consumer(consumer)?))
    }

    /// Consumer lag lives with the brokers (a watermark round trip per partition): not known here.
    fn lag(&self, _consumer: &str) -> Option<u64> {
        None
    }

    fn health(&self) -> LogHealth {
        LogHealth { backend: "kafka", next_offset: None, size_bytes: 0, budget_bytes: 0, refusing_appends: false, write_error: None }
    }
}

/// Next offset per partition of everything delivered (committed by the router), shared with the
/// rebalance callback.
type Delivered = Arc<Mutex<BTreeMap<u32, u64>>>;

struct RebalanceContext {
    topic: String,
    delivered: Delivered,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    /// Before partitions go to another member, what was delivered from them is committed, so
    /// the new owner starts right after it: a batch delivered but whose commit had not landed
    /// yet is not delivered twice, and nothing undelivered is skipped (it was never committed).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let mut delivered = self.delivered.lock().unwrap();
                let mut list = TopicPartitionList::new();
                for elem in revoked.elements_for_topic(&self.topic) {
                    let partition = elem.partition() as u32;
                    if let Some(next) = delivered.remove(&partition) {
                        let _ = list.add_partition_offset(&self.topic, elem.partition(), Offset::Offset(next as i64));
                    }
                }
                if list.count() > 0 {
                    match consumer.commit(&list, CommitMode::Sync) {
                        Ok(()) => tracing::info!(partitions = list.count(), "rebalance: committed what was delivered from the revoked partitions"),
                        Err(e) => tracing::warn!(error = %e, "rebalance: could not commit the revoked partitions; their new owner re-delivers from the last commit"),
                    }
                }
                let parts: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?parts, "rebalance: partitions revoked");
            }
            Rebalance::Assign(assigned) => {
                let parts: Vec<i32> = assigned.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(?parts, "rebalance: partitions assigned");
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// One destination's member of its consumer group.
pub struct KafkaReader {
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    topic: Arc<str>,
    /// Next offset per partition of everything read.
    next: BTreeMap<u32, u64>,
    delivered: Delivered,
    corrupt: Vec<CorruptRecord>,
    last_source: Option<Arc<str>>,
    last_key_id: Option<Arc<str>>,
}

impl KafkaReader {
    /// The partitions this member has now.
    pub fn assignment(&self) -> Vec<u32> {
        self.consumer
            .assignment()
            .map(|l| l.elements().iter().map(|e| e.partition() as u32).collect())
            .unwrap_or_default()
    }

    fn take(&mut self, msg: &rdkafka::message::BorrowedMessage<'_>, out: &mut Vec<Record>) -> usize {
        let partition = msg.partition() as u32;
        let offset = msg.offset() as u64;
        self.next.insert(partition, offset + 1);
        let value = msg.payload().unwrap_or(&[]);
        match payload::decode(value) {
            Ok(parts) => {
                let source = intern(&mut self.last_source, &value[parts.source.clone()]);
                let write_key_id = intern(&mut self.last_key_id, &value[parts.write_key_id.clone()]);
                let mut record = Record::from_parts(offset, &Bytes::copy_from_slice(value), &parts, source, write_key_id);
                record.partition = Some(partition);
                let len = record.event.len();
                out.push(record);
                len
            }
            Err(reason) => {
                // Not a Sluice record (another producer wrote to the topic): kept for the
                // dead-letter store rather than dropped or retried for ever.
                tracing::error!(topic = %self.topic, partition, offset, %reason, "a message of the topic is not a Sluice record; quarantined");
                self.corrupt.push(CorruptRecord {
                    segment: format!("kafka:{}/{partition}", self.topic),
                    position: offset,
                    offset,
                    records: 1,
                    reason,
                    bytes: Bytes::copy_from_slice(value),
                });
                0
            }
        }
    }
}

fn intern(last: &mut Option<Arc<str>>, bytes: &[u8]) -> Arc<str> {
    match last {
        Some(s) if s.as_bytes() == bytes => s.clone(),
        _ => {
            let s: Arc<str> = Arc::from(String::from_utf8_lossy(bytes).as_ref());
            *last = Some(s.clone());
            s
        }
    }
}

fn unavailable(e: rdkafka::error::KafkaError) -> LogError {
    LogError::Unavailable(format!("reading from Kafka: {e}"))
}

#[async_trait]
impl LogReader for KafkaReader {
    async fn read(&mut self, max_records: usize, max_bytes: usize, wait: Duration) -> Result<Vec<Record>, LogError> {
        let consumer = self.consumer.clone();
        let mut out = Vec::new();
        let first = match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_) => return Ok(out),
            Ok(r) => r.map_err(unavailable)?,
        };
        let mut bytes = self.take(&first, &mut out);
        drop(first);
        // Then whatever is already fetched, without waiting.
        while out.len() < max_records.max(1) && bytes < max_bytes {
            match consumer.recv().now_or_never() {
                Some(Ok(msg)) => bytes += self.take(&msg, &mut out),
                Some(Err(e)) => {
                    if out.is_empty() {
                        return Err(unavailable(e));
                    }
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    fn take_corrupt(&mut self) -> Vec<CorruptRecord> {
        std::mem::take(&mut self.corrupt)
    }

    fn position(&self) -> Position {
        Position::partitions(self.next.clone())
    }

    fn lag(&self) -> Option<u64> {
        None
    }

    fn committer(&self) -> Arc<dyn LogCommitter> {
        Arc::new(KafkaCommitter {
            consumer: self.consumer.clone(),
            topic: self.topic.clone(),
            delivered: self.delivered.clone(),
        })
    }
}

struct KafkaCommitter {
    consumer: Arc<StreamConsumer<RebalanceContext>>,
    topic: Arc<str>,
    delivered: Delivered,
}

#[async_trait]
impl LogCommitter for KafkaCommitter {
    async fn commit(&self, position: &Position) -> Result<(), LogError> {
        let Some(next) = position.as_partitions() else {
            return Err(LogError::Config(format!("a Kafka consumer cannot commit the position {position}")));
        };
        // Only partitions this member still has: one taken away by a rebalance was committed
        // when it was revoked, and its new owner commits from there.
        let owned: Vec<u32> = self
            .consumer
            .assignment()
            .map(|l| l.elements_for_topic(&self.topic).iter().map(|e| e.partition() as u32).collect())
            .map_err(|e| LogError::Unavailable(format!("reading the assignment: {e}")))?;
        let mut list = TopicPartitionList::new();
        let mut committed = Vec::new();
        for (&partition, &offset) in next.iter().filter(|(p, _)| owned.contains(p)) {
            list.add_partition_offset(&self.topic, partition as i32, Offset::Offset(offset as i64))
                .map_err(|e| LogError::Unavailable(e.to_string()))?;
            committed.push((partition, offset));
        }
        if committed.is_empty() {
            return Ok(());
        }
        {
            // Recorded before the commit so that a revoke during it commits these too.
            let mut delivered = self.delivered.lock().unwrap();
            for &(p, o) in &committed {
                delivered.insert(p, o);
            }
        }
        let consumer = self.consumer.clone();
        tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|e| LogError::Unavailable(format!("commit task: {e}")))?
            .map_err(|e| LogError::Unavailable(format!("committing offsets: {e}")))
    }
}
