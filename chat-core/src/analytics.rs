//! Every analytics event of the chat core goes through [`Analytics::emit`]: one place that talks
//! to the SDK and keeps the emission ledger in step with it (see `ledger.rs` for the order).
//!
//! An event the SDK refuses never fails the user's action: the chat keeps working when analytics
//! cannot, the failure is logged and counted, and the ledger records the id as refused.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::ledger::Ledger;
use sluice_analytics::{Client, ClientConfig, Identity, Message};
use crate::ChatError;

#[derive(Clone)]
pub struct Analytics {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    client: Client,
    ledger: Ledger,
    emitted: AtomicU64,
    refused: AtomicU64,
}

impl Analytics {
    /// Analytics on: the SDK with its durable queue under `data_dir/analytics-queue`, the ledger
    /// at `data_dir/emitted.ledger`.
    pub fn start(sluice_url: &str, write_key: &str, data_dir: &Path) -> Result<Analytics, ChatError> {
        let ledger = Ledger::open(&data_dir.join("emitted.ledger"))?;
        let config = ClientConfig::new(sluice_url, write_key).durable_queue(data_dir.join("analytics-queue"));
        let client = Client::new(config).map_err(|e| ChatError::Analytics(e.to_string()))?;
        Ok(Analytics {
            inner: Some(Arc::new(Inner { client, ledger, emitted: AtomicU64::new(0), refused: AtomicU64::new(0) })),
        })
    }

    /// Analytics off (for measuring what the SDK costs the chat): nothing is emitted.
    pub fn off() -> Analytics {
        Analytics { inner: None }
    }

    pub fn track(&self, user_id: &str, event: &str, properties: Value, client: &str) -> impl std::future::Future<Output = ()> + '_ {
        let msg = self.inner.as_ref().map(|_| {
            Message::track(Identity::user(user_id), event)
                .properties(properties)
                .context(serde_json::json!({"client": client}))
        });
        self.emit(msg)
    }

    pub fn identify(&self, user_id: &str, traits: Value, client: &str) -> impl std::future::Future<Output = ()> + '_ {
        let msg = self.inner.as_ref().map(|_| {
            Message::identify(Identity::user(user_id)).traits(traits).context(serde_json::json!({"client": client}))
        });
        self.emit(msg)
    }

    async fn emit(&self, msg: Option<Message>) {
        let (Some(inner), Some(msg)) = (self.inner.as_ref(), msg) else { return };
        let id = msg.message_id().to_string();
        if let Err(error) = inner.ledger.intent(&id).await {
            // Without its ledger line the event would be invisible to reconciliation: not sent.
            inner.refused.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, "emission ledger unavailable; event not emitted");
            return;
        }
        match inner.client.send_async(msg).await {
            Ok(()) => {
                inner.ledger.confirm(&id);
                inner.emitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                inner.ledger.refuse(&id);
                inner.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, message_id = %id, "the SDK refused an event");
            }
        }
    }

    /// (emitted, refused) since start.
    pub fn counts(&self) -> (u64, u64) {
        self.inner.as_ref().map_or((0, 0), |i| (i.emitted.load(Ordering::Relaxed), i.refused.load(Ordering::Relaxed)))
    }

    /// Hands everything queued to Sluice (up to `timeout`) and syncs the ledger.
    pub async fn shutdown(&self, timeout: Duration) {
        let Some(inner) = self.inner.as_ref() else { return };
        let client = inner.client.clone();
        match tokio::task::spawn_blocking(move || client.shutdown(timeout)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "analytics not fully flushed at shutdown; the durable queue keeps the rest"),
            Err(error) => tracing::warn!(%error, "analytics shutdown task failed"),
        }
        if let Err(error) = inner.ledger.sync().await {
            tracing::error!(%error, "emission ledger sync failed at shutdown");
        }
    }
}
