//! The load generator behind `chat-load`: simulated users over real HTTP and WebSocket
//! connections to a chat core, following Mattermost's published usage profile.
//!
//! Profile: each user posts ~30 and reads ~300 times a day, ~30% of registered users are online
//! at once, a post reaches ~20 channel members on average (a few big channels of up to 2,000
//! members pull the average up from the many small ones), and an optional war room takes a fixed
//! number of posts per second. A day is compressed by `--compression` (printed at start).
//!
//! Open loop: every kind of action has its own ticker at a fixed offered rate, and each tick
//! starts the action without waiting for the previous ones; when more than `--max-in-flight`
//! actions are pending, new ticks are shed and counted, so an overloaded server shows up as shed
//! load and latency instead of a silently lower rate.

mod run;
mod setup;
mod stats;

use std::path::PathBuf;

use clap::Parser;

pub use run::run;

#[derive(Parser, Debug, Clone)]
#[command(name = "chat-load", version, about = "Load generator for chat-core (Mattermost usage profile)")]
pub struct Options {
    /// The chat core (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8065")]
    pub url: String,
    /// Registered users.
    #[arg(long, default_value_t = 300)]
    pub users: usize,
    /// Share of registered users online (WebSocket open) at once.
    #[arg(long, default_value_t = 0.3)]
    pub online: f64,
    /// Time compression: simulated seconds per real second.
    #[arg(long, default_value_t = 720.0)]
    pub compression: f64,
    /// Length of the run phase, in seconds (after setup).
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Stop after this many actions in the run phase (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_actions: u64,
    /// Posts per user per day.
    #[arg(long, default_value_t = 30.0)]
    pub posts_per_day: f64,
    /// Channel reads per user per day.
    #[arg(long, default_value_t = 300.0)]
    pub reads_per_day: f64,
    /// Target average channel members a post reaches.
    #[arg(long, default_value_t = 20)]
    pub fanout: usize,
    /// Number of big channels.
    #[arg(long, default_value_t = 2)]
    pub big_channels: usize,
    /// Members of each big channel (capped at --users).
    #[arg(long, default_value_t = 2000)]
    pub big_channel_members: usize,
    /// War-room mode: posts per second in one channel (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub war_room_rate: f64,
    /// Members of the war room (capped at --users).
    #[arg(long, default_value_t = 200)]
    pub war_room_members: usize,
    /// Online users log out and others log in, so that a session lasts this many simulated hours.
    #[arg(long, default_value_t = 8.0)]
    pub session_hours: f64,
    /// Actions pending at once before new ones are shed.
    #[arg(long, default_value_t = 2000)]
    pub max_in_flight: usize,
    /// Concurrent requests during setup.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Prefix of usernames and team name, so runs against one database do not collide.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Write every simulated user's username, name and email here (CSV), e.g. to search the
    /// destinations for personal data afterwards.
    #[arg(long)]
    pub roster: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 1)]
    pub progress_every: u64,
}

impl Options {
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url).map_err(|e| format!("--url: {e}"))?;
        match url.host_str() {
            Some("127.0.0.1") | Some("localhost") | Some("[::1]") => {}
            other => return Err(format!("--url must point at this machine (127.0.0.1), got {other:?}")),
        }
        if self.users < 2 {
            return Err("--users must be at least 2".into());
        }
        if !(0.0..=1.0).contains(&self.online) || self.online * self.users as f64 <= 0.5 {
            return Err("--online must be in (0, 1] and leave at least one user online".into());
        }
        if self.compression <= 0.0 || self.duration == 0 {
            return Err("--compression and --duration must be positive".into());
        }
        Ok(())
    }
}

/// Raises the open-files limit to its hard maximum: every WebSocket is a file descriptor.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (lim.current, lim.maximum) {
        if current < max {
            let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(max), maximum: Some(max) });
        }
    }
}
