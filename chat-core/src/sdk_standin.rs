//! A stand-in with the names of `sluice_analytics` (SDK_CONTRACT.md), used only until the real
//! SDK crate is in the workspace. Not durable: it posts each message to `/v1/batch` directly.

use std::time::Duration;

use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("http: {0}")]
    Http(String),
}

pub struct ClientConfig {
    url: String,
    write_key: String,
}

impl ClientConfig {
    pub fn new(url: &str, write_key: &str) -> Self {
        ClientConfig { url: url.trim_end_matches('/').to_string(), write_key: write_key.to_string() }
    }
    pub fn durable_queue(self, _dir: impl AsRef<std::path::Path>) -> Self {
        self
    }
}

pub enum Identity {
    User(String),
}

impl Identity {
    pub fn user(id: impl Into<String>) -> Self {
        Identity::User(id.into())
    }
}

pub struct Message {
    body: Value,
    id: String,
}

impl Message {
    fn new(kind: &str, identity: Identity) -> Self {
        let id = uuid::Uuid::new_v4().to_string();
        let Identity::User(user) = identity;
        Message { body: json!({"type": kind, "userId": user, "messageId": id}), id }
    }
    pub fn track(identity: Identity, event: &str) -> Self {
        let mut m = Self::new("track", identity);
        m.body["event"] = json!(event);
        m
    }
    pub fn identify(identity: Identity) -> Self {
        Self::new("identify", identity)
    }
    pub fn properties(mut self, v: Value) -> Self {
        self.body["properties"] = v;
        self
    }
    pub fn traits(mut self, v: Value) -> Self {
        self.body["traits"] = v;
        self
    }
    pub fn context(mut self, v: Value) -> Self {
        self.body["context"] = v;
        self
    }
    pub fn message_id(&self) -> &str {
        &self.id
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    config: std::sync::Arc<ClientConfig>,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().map_err(|e| Error::Http(e.to_string()))?;
        Ok(Client { http, config: std::sync::Arc::new(config) })
    }
    pub async fn send_async(&self, msg: Message) -> Result<(), Error> {
        let r = self
            .http
            .post(format!("{}/v1/batch", self.config.url))
            .basic_auth(&self.config.write_key, Some(""))
            .json(&json!({"batch": [msg.body]}))
            .send()
            .await
            .map_err(|e| Error::Http(e.to_string()))?;
        if !r.status().is_success() {
            return Err(Error::Http(r.status().to_string()));
        }
        Ok(())
    }
    pub fn shutdown(&self, _timeout: Duration) -> Result<(), Error> {
        Ok(())
    }
}
