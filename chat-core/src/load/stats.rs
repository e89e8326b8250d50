//! Counters of a load run, the progress line and the summary.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

#[derive(Default)]
pub struct Stats {
    pub posts: AtomicU64,
    pub reads: AtomicU64,
    pub typing: AtomicU64,
    pub reactions: AtomicU64,
    pub logins: AtomicU64,
    pub logouts: AtomicU64,
    pub errors: AtomicU64,
    pub connection_errors: AtomicU64,
    pub shed: AtomicU64,
    /// Actions answered 401 because their user logged out while they were on the way.
    pub raced_logout: AtomicU64,
    pub in_flight: AtomicI64,
    pub ws_connected: AtomicI64,
    pub ws_peak: AtomicI64,
    pub ws_connect_errors: AtomicU64,
    pub ws_frames: AtomicU64,
    pub ws_posted: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Post round trips in microseconds.
    pub post_latency: Mutex<Vec<u32>>,
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Stats {
    pub fn actions(&self) -> u64 {
        get(&self.posts) + get(&self.reads) + get(&self.typing) + get(&self.reactions) + get(&self.logins) + get(&self.logouts)
    }

    pub fn error(&self, e: String) {
        if e.starts_with("connection") {
            self.connection_errors.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_error.lock().unwrap() = Some(e);
    }

    pub fn ws_up(&self) {
        let now = self.ws_connected.fetch_add(1, Ordering::Relaxed) + 1;
        self.ws_peak.fetch_max(now, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot { actions: self.actions(), posts: get(&self.posts), frames: get(&self.ws_frames) }
    }

    pub fn p99_ms(&self, since: usize) -> f64 {
        let lat = self.post_latency.lock().unwrap();
        percentile(&lat[since.min(lat.len())..], 0.99)
    }

    pub fn summary(&self, users: usize, online_target: usize, compression: f64, elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64().max(0.001);
        let lat = self.post_latency.lock().unwrap();
        Summary {
            users,
            online_target,
            compression,
            seconds: secs,
            ws_connected_at_end: self.ws_connected.load(Ordering::Relaxed),
            ws_connected_peak: self.ws_peak.load(Ordering::Relaxed),
            posts: get(&self.posts),
            reads: get(&self.reads),
            typing: get(&self.typing),
            reactions: get(&self.reactions),
            logins: get(&self.logins),
            logouts: get(&self.logouts),
            actions: self.actions(),
            actions_per_sec: self.actions() as f64 / secs,
            posts_per_sec: get(&self.posts) as f64 / secs,
            ws_deliveries: get(&self.ws_frames),
            ws_deliveries_per_sec: get(&self.ws_frames) as f64 / secs,
            ws_posted_per_post: get(&self.ws_posted) as f64 / (get(&self.posts).max(1)) as f64,
            errors: get(&self.errors),
            connection_errors: get(&self.connection_errors),
            ws_connect_errors: get(&self.ws_connect_errors),
            shed: get(&self.shed),
            raced_logout: get(&self.raced_logout),
            post_p50_ms: percentile(&lat, 0.50),
            post_p99_ms: percentile(&lat, 0.99),
            post_max_ms: percentile(&lat, 1.0),
            last_error: self.last_error.lock().unwrap().clone(),
        }
    }
}

pub struct Snapshot {
    pub actions: u64,
    pub posts: u64,
    pub frames: u64,
}

fn percentile(samples: &[u32], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    f64::from(v[i]) / 1000.0
}

#[derive(Serialize, Debug)]
pub struct Summary {
    pub users: usize,
    pub online_target: usize,
    pub compression: f64,
    pub seconds: f64,
    pub ws_connected_at_end: i64,
    pub ws_connected_peak: i64,
    pub posts: u64,
    pub reads: u64,
    pub typing: u64,
    pub reactions: u64,
    pub logins: u64,
    pub logouts: u64,
    pub actions: u64,
    pub actions_per_sec: f64,
    pub posts_per_sec: f64,
    pub ws_deliveries: u64,
    pub ws_deliveries_per_sec: f64,
    /// `posted` frames received per post made: the realised fan-out to online members.
    pub ws_posted_per_post: f64,
    pub errors: u64,
    pub connection_errors: u64,
    pub ws_connect_errors: u64,
    pub shed: u64,
    pub raced_logout: u64,
    pub post_p50_ms: f64,
    pub post_p99_ms: f64,
    pub post_max_ms: f64,
    pub last_error: Option<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "summary: {:.1} s, {} users registered, {} online target, compression {}x", self.seconds, self.users, self.online_target, self.compression)?;
        writeln!(f, "  users connected (WebSocket): {} at the end, {} at peak", self.ws_connected_at_end, self.ws_connected_peak)?;
        writeln!(
            f,
            "  actions: {} ({:.1}/s): {} posts ({:.1}/s), {} reads, {} typing, {} reactions, {} logins, {} logouts",
            self.actions, self.actions_per_sec, self.posts, self.posts_per_sec, self.reads, self.typing, self.reactions, self.logins, self.logouts
        )?;
        writeln!(f, "  WebSocket deliveries: {} ({:.1}/s), {:.1} `posted` frames per post", self.ws_deliveries, self.ws_deliveries_per_sec, self.ws_posted_per_post)?;
        writeln!(f, "  post latency: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", self.post_p50_ms, self.post_p99_ms, self.post_max_ms)?;
        write!(
            f,
            "  errors: {} answered with an error, {} connection failures, {} WebSocket connect failures, {} actions shed (over --max-in-flight); \
             {} actions raced their user's logout (401, not counted as errors)",
            self.errors, self.connection_errors, self.ws_connect_errors, self.shed, self.raced_logout
        )?;
        if let Some(e) = &self.last_error {
            write!(f, "\n  last error: {}", e.chars().take(200).collect::<String>())?;
        }
        Ok(())
    }
}
