//! In-memory state shared by every request: open WebSocket connections per user, channel
//! membership (the fan-out list of a post), and the token -> user cache. The database stays the
//! truth; these are caches filled on first use and updated on every change made through the API.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::mpsc;

use crate::store::Channel;

/// A channel and its members, shared read-only by the posts that fan out to it.
pub struct ChannelInfo {
    pub channel: Channel,
    pub members: Vec<String>,
}

/// Text frames already serialised once, shared by every receiver.
pub type Frame = Arc<str>;

/// The open connections of one user: (connection id, its frame queue).
type Connections = Vec<(u64, mpsc::Sender<Frame>)>;

#[derive(Default)]
pub struct Hub {
    conns: RwLock<HashMap<String, Connections>>,
    channels: RwLock<HashMap<String, Arc<ChannelInfo>>>,
    tokens: RwLock<HashMap<String, String>>,
    next_conn: AtomicU64,
    pub deliveries: AtomicU64,
    /// Frames dropped because a connection's queue was full (a client not reading).
    pub dropped: AtomicU64,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn register(&self, user: &str, tx: mpsc::Sender<Frame>) -> u64 {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        write(&self.conns).entry(user.to_string()).or_default().push((id, tx));
        id
    }

    pub fn unregister(&self, user: &str, conn: u64) {
        let mut conns = write(&self.conns);
        if let Some(list) = conns.get_mut(user) {
            list.retain(|(id, _)| *id != conn);
            if list.is_empty() {
                conns.remove(user);
            }
        }
    }

    pub fn connections(&self) -> usize {
        read(&self.conns).values().map(Vec::len).sum()
    }

    /// Sends `frame` to every open connection of `users` except `omit`; returns how many got it.
    pub fn send_to<'a>(&self, users: impl IntoIterator<Item = &'a String>, omit: Option<&str>, frame: &Frame) -> u64 {
        let conns = read(&self.conns);
        let mut sent = 0;
        for user in users {
            if Some(user.as_str()) == omit {
                continue;
            }
            if let Some(list) = conns.get(user) {
                for (_, tx) in list {
                    if tx.try_send(frame.clone()).is_ok() {
                        sent += 1;
                    } else {
                        self.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        self.deliveries.fetch_add(sent, Ordering::Relaxed);
        sent
    }

    pub fn channel(&self, id: &str) -> Option<Arc<ChannelInfo>> {
        read(&self.channels).get(id).cloned()
    }

    pub fn put_channel(&self, info: ChannelInfo) -> Arc<ChannelInfo> {
        let info = Arc::new(info);
        write(&self.channels).insert(info.channel.id.clone(), info.clone());
        info
    }

    /// Drops the cached membership after a join or leave; the next use reads it again.
    pub fn forget_channel(&self, id: &str) {
        write(&self.channels).remove(id);
    }

    pub fn token_user(&self, token: &str) -> Option<String> {
        read(&self.tokens).get(token).cloned()
    }

    pub fn put_token(&self, token: &str, user: &str) {
        write(&self.tokens).insert(token.to_string(), user.to_string());
    }

    pub fn forget_token(&self, token: &str) {
        write(&self.tokens).remove(token);
    }
}
