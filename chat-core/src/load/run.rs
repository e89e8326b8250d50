//! The run phase: open-loop tickers per action kind, one WebSocket per online user, churn of
//! sessions, the progress line and the summary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use reqwest::Method;
use serde_json::json;
use tokio::task::JoinHandle;

use super::setup::{call, setup, Kind, SimUser, World};
use super::stats::{Stats, Summary};
use super::Options;

const WORDS: [&str; 16] = ["deploy", "ok", "looks", "good", "the", "build", "is", "green", "can", "you", "check", "logs", "thanks", "meeting", "at", "noon"];

struct Sim {
    world: World,
    stats: Stats,
    online: Mutex<Vec<usize>>,
    offline: Mutex<Vec<usize>>,
    sockets: Mutex<HashMap<usize, JoinHandle<()>>>,
    stop: AtomicBool,
    max_actions: u64,
    max_in_flight: usize,
}

pub async fn run(o: Options) -> Result<Summary, String> {
    o.check()?;
    super::raise_fd_limit();
    let run_id = o.run_id.clone().unwrap_or_else(|| format!("r{:06x}", rand::rng().random::<u32>() & 0xff_ffff));
    let online_count = ((o.users as f64 * o.online).round() as usize).clamp(1, o.users);
    let per_sec = o.compression / 86_400.0;
    let post_rate = online_count as f64 * o.posts_per_day * per_sec;
    let read_rate = online_count as f64 * o.reads_per_day * per_sec;
    let churn_rate = online_count as f64 / (o.session_hours * 3600.0 / o.compression);
    eprintln!(
        "chat-load {run_id}: compression {}x (one simulated day every {:.0} s); {} users, {online_count} online; \
         offered {post_rate:.2} posts/s, {read_rate:.2} reads/s, {churn_rate:.2} session changes/s{}; {} s",
        o.compression,
        86_400.0 / o.compression,
        o.users,
        if o.war_room_rate > 0.0 { format!(", war room {} posts/s", o.war_room_rate) } else { String::new() },
        o.duration
    );
    let started_setup = Instant::now();
    let world = setup(&o, &run_id).await?;
    eprintln!("setup took {:.1} s", started_setup.elapsed().as_secs_f64());
    if let Some(path) = &o.roster {
        let mut csv = String::from("username,name,email\n");
        for u in &world.users {
            csv.push_str(&format!("{},{} {},{}\n", u.username, u.first, u.last, u.email));
        }
        std::fs::write(path, csv).map_err(|e| format!("--roster {}: {e}", path.display()))?;
    }
    let mut order: Vec<usize> = (0..o.users).collect();
    order.shuffle(&mut rand::rng());
    let (on, off) = order.split_at(online_count);
    let sim = Arc::new(Sim {
        world,
        stats: Stats::default(),
        online: Mutex::new(on.to_vec()),
        offline: Mutex::new(off.to_vec()),
        sockets: Mutex::new(HashMap::new()),
        stop: AtomicBool::new(false),
        max_actions: o.max_actions,
        max_in_flight: o.max_in_flight,
    });
    for &i in on {
        sim.world.users[i].online.store(true, Ordering::Relaxed);
        open_socket(&sim, i);
    }
    let started = Instant::now();
    let mut tickers = vec![
        ticker(sim.clone(), post_rate, Action::Post),
        ticker(sim.clone(), read_rate, Action::Read),
        ticker(sim.clone(), churn_rate, Action::Churn),
    ];
    if o.war_room_rate > 0.0 {
        tickers.push(ticker(sim.clone(), o.war_room_rate, Action::WarRoom));
    }
    let deadline = started + Duration::from_secs(o.duration);
    let every = Duration::from_secs(o.progress_every.max(1));
    let mut last = sim.stats.snapshot();
    let mut last_lat = 0;
    let mut next = started + every;
    while Instant::now() < deadline && !sim.stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next.min(deadline).into()).await;
        next += every;
        let now = sim.stats.snapshot();
        let dt = every.as_secs_f64();
        let s = &sim.stats;
        eprintln!(
            "[{:>4.0}s] online {:>5} ws {:>5} | actions/s {:>7.1} posts/s {:>6.1} ws deliveries/s {:>8.1} | p99 post {:>6.1} ms | errors {} conn {} shed {} in-flight {}",
            started.elapsed().as_secs_f64(),
            sim.online.lock().unwrap().len(),
            s.ws_connected.load(Ordering::Relaxed),
            (now.actions - last.actions) as f64 / dt,
            (now.posts - last.posts) as f64 / dt,
            (now.frames - last.frames) as f64 / dt,
            s.p99_ms(last_lat),
            s.errors.load(Ordering::Relaxed),
            s.connection_errors.load(Ordering::Relaxed),
            s.shed.load(Ordering::Relaxed),
            s.in_flight.load(Ordering::Relaxed),
        );
        last_lat = s.post_latency.lock().unwrap().len();
        last = now;
    }
    sim.stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for t in tickers.drain(..) {
        t.abort();
    }
    // Let the actions already started finish (they are part of the offered load).
    let drain_until = Instant::now() + Duration::from_secs(20);
    while sim.stats.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let summary = sim.stats.summary(o.users, online_count, o.compression, elapsed);
    for (_, h) in sim.sockets.lock().unwrap().drain() {
        h.abort();
    }
    if let Some(path) = &o.summary_json {
        let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
        std::fs::write(path, text).map_err(|e| format!("--summary-json {}: {e}", path.display()))?;
    }
    Ok(summary)
}

#[derive(Clone, Copy)]
enum Action {
    Post,
    Read,
    WarRoom,
    Churn,
}

/// Starts one action per tick at `rate` per second, whether or not earlier ones have finished.
fn ticker(sim: Arc<Sim>, rate: f64, action: Action) -> JoinHandle<()> {
    tokio::spawn(async move {
        if rate <= 0.0 {
            return;
        }
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        interval.tick().await;
        loop {
            interval.tick().await;
            if sim.stop.load(Ordering::Relaxed) {
                return;
            }
            if sim.max_actions > 0 && sim.stats.actions() >= sim.max_actions {
                sim.stop.store(true, Ordering::Relaxed);
                return;
            }
            if sim.stats.in_flight.load(Ordering::Relaxed) as usize >= sim.max_in_flight {
                sim.stats.shed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            sim.stats.in_flight.fetch_add(1, Ordering::Relaxed);
            let sim = sim.clone();
            tokio::spawn(async move {
                let result = match action {
                    Action::Post => post(&sim, false).await,
                    Action::WarRoom => post(&sim, true).await,
                    Action::Read => read(&sim).await,
                    Action::Churn => churn(&sim).await.map_err(|e| (e, true)),
                };
                match result {
                    Ok(()) => {}
                    // The churn ticker logged the user out while this action was on its way.
                    Err((e, still_online)) if e.starts_with("401") && !still_online => {
                        sim.stats.raced_logout.fetch_add(1, Ordering::Relaxed);
                    }
                    Err((e, _)) => sim.stats.error(e),
                }
                sim.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    })
}

fn random_online(sim: &Sim, war_room: bool) -> Option<Arc<SimUser>> {
    let online = sim.online.lock().unwrap();
    let mut rng = rand::rng();
    if war_room {
        let members: Vec<&usize> = online.iter().filter(|&&i| sim.world.users[i].war_room.load(Ordering::Relaxed)).collect();
        return members.choose(&mut rng).map(|&&i| sim.world.users[i].clone());
    }
    online.choose(&mut rng).map(|&i| sim.world.users[i].clone())
}

fn message(rng: &mut impl Rng) -> String {
    let n = rng.random_range(2..40);
    (0..n).map(|_| *WORDS.choose(rng).unwrap_or(&"ok")).collect::<Vec<_>>().join(" ")
}

/// Picks the channel of a post by the planned shares of big, direct and small channels.
fn pick_channel(sim: &Sim, u: &SimUser, rng: &mut impl Rng) -> Option<usize> {
    let x: f64 = rng.random();
    let big = u.big.lock().unwrap();
    let dms = u.dms.lock().unwrap();
    let small = u.small.lock().unwrap();
    let pool: &Vec<usize> = if x < sim.world.p_big && !big.is_empty() {
        &big
    } else if x < sim.world.p_big + sim.world.p_dm && !dms.is_empty() {
        &dms
    } else if !small.is_empty() {
        &small
    } else {
        &dms
    };
    pool.choose(rng).copied()
}

/// Errors carry whether the acting user was still online when the action failed.
async fn post(sim: &Sim, war_room: bool) -> Result<(), (String, bool)> {
    let Some(u) = random_online(sim, war_room) else { return Ok(()) };
    post_as(sim, war_room, &u).await.map_err(|e| (e, u.online.load(Ordering::Relaxed)))
}

async fn post_as(sim: &Sim, war_room: bool, u: &Arc<SimUser>) -> Result<(), String> {
    let w = &sim.world;
    let (idx, text, reply, typing) = {
        let mut rng = rand::rng();
        let idx = if war_room { w.war_room } else { pick_channel(sim, u, &mut rng) };
        let Some(idx) = idx else { return Ok(()) };
        (idx, message(&mut rng), rng.random_bool(0.3), rng.random_bool(0.5))
    };
    let channel = &w.channels[idx];
    let root = if reply { channel.last_post.lock().unwrap().clone().unwrap_or_default() } else { String::new() };
    let token = u.token();
    if typing {
        call(&w.http, Method::POST, w.url("/users/me/typing"), Some(&token), Some(json!({"channel_id": channel.id, "parent_id": root}))).await?;
        sim.stats.typing.fetch_add(1, Ordering::Relaxed);
    }
    let started = Instant::now();
    let res = call(&w.http, Method::POST, w.url("/posts"), Some(&token), Some(json!({"channel_id": channel.id, "message": text, "root_id": root}))).await?;
    let micros = started.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    sim.stats.post_latency.lock().unwrap().push(micros);
    sim.stats.posts.fetch_add(1, Ordering::Relaxed);
    if let Ok(body) = res.json::<serde_json::Value>().await {
        if let Some(id) = body["id"].as_str() {
            if channel.kind != Kind::Direct || rand::rng().random_bool(0.5) {
                *channel.last_post.lock().unwrap() = Some(id.to_string());
            }
        }
    }
    Ok(())
}

async fn read(sim: &Sim) -> Result<(), (String, bool)> {
    let Some(u) = random_online(sim, false) else { return Ok(()) };
    read_as(sim, &u).await.map_err(|e| (e, u.online.load(Ordering::Relaxed)))
}

async fn read_as(sim: &Sim, u: &Arc<SimUser>) -> Result<(), String> {
    let w = &sim.world;
    let (idx, react) = {
        let mut rng = rand::rng();
        let all: Vec<usize> = [&*u.small.lock().unwrap(), &*u.big.lock().unwrap(), &*u.dms.lock().unwrap()].into_iter().flatten().copied().collect();
        let Some(&idx) = all.choose(&mut rng) else { return Ok(()) };
        (idx, rng.random_bool(0.05))
    };
    let channel = &w.channels[idx];
    let token = u.token();
    call(&w.http, Method::GET, w.url(&format!("/channels/{}/posts?per_page=30", channel.id)), Some(&token), None).await?;
    call(&w.http, Method::POST, w.url("/channels/members/me/view"), Some(&token), Some(json!({"channel_id": channel.id}))).await?;
    sim.stats.reads.fetch_add(1, Ordering::Relaxed);
    let last = channel.last_post.lock().unwrap().clone();
    if let (true, Some(post_id)) = (react, last) {
        let emoji = ["+1", "smile", "eyes", "tada"][rand::rng().random_range(0..4)];
        call(&w.http, Method::POST, w.url("/reactions"), Some(&token), Some(json!({"user_id": u.id(), "post_id": post_id, "emoji_name": emoji}))).await?;
        sim.stats.reactions.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// One online user logs out and closes the WebSocket; one offline user logs in and opens one.
async fn churn(sim: &Arc<Sim>) -> Result<(), String> {
    let (going, coming) = {
        let mut on = sim.online.lock().unwrap();
        let mut off = sim.offline.lock().unwrap();
        if on.is_empty() || off.is_empty() {
            return Ok(());
        }
        let mut rng = rand::rng();
        let (i, j) = (rng.random_range(0..on.len()), rng.random_range(0..off.len()));
        let a = on.swap_remove(i);
        let b = off.swap_remove(j);
        (a, b)
    };
    let w = &sim.world;
    let u = w.users[going].clone();
    u.online.store(false, Ordering::Relaxed);
    if let Some(h) = sim.sockets.lock().unwrap().remove(&going) {
        h.abort();
    }
    let out = w.logout(&u).await;
    sim.offline.lock().unwrap().push(going);
    out?;
    sim.stats.logouts.fetch_add(1, Ordering::Relaxed);
    let v = w.users[coming].clone();
    let login = w.login(&v).await;
    if login.is_ok() {
        sim.stats.logins.fetch_add(1, Ordering::Relaxed);
        v.online.store(true, Ordering::Relaxed);
        sim.online.lock().unwrap().push(coming);
        open_socket(sim, coming);
    } else {
        sim.offline.lock().unwrap().push(coming);
    }
    login
}

/// Keeps a WebSocket open for user `i` while the user is online, reconnecting after failures
/// (the chat core may restart); counts every frame received.
fn open_socket(sim: &Arc<Sim>, i: usize) {
    let s = sim.clone();
    let handle = tokio::spawn(async move {
        let u = s.world.users[i].clone();
        let base = s.world.base.replacen("http", "ws", 1);
        while u.online.load(Ordering::Relaxed) && !s.stop.load(Ordering::Relaxed) {
            let url = format!("{base}/api/v4/websocket?token={}", u.token());
            match tokio_tungstenite::connect_async(url).await {
                Ok((mut ws, _)) => {
                    s.stats.ws_up();
                    let _guard = Connected(&s.stats);
                    while let Some(msg) = ws.next().await {
                        match msg {
                            Ok(tokio_tungstenite::tungstenite::Message::Text(t)) => {
                                s.stats.ws_frames.fetch_add(1, Ordering::Relaxed);
                                if t.as_str().contains("\"event\":\"posted\"") {
                                    s.stats.ws_posted.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break,
                        }
                    }
                }
                Err(_) => {
                    s.stats.ws_connect_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            let pause = 300 + rand::rng().random_range(0..400u64);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    });
    sim.sockets.lock().unwrap().insert(i, handle);
}

/// Counts a WebSocket as connected for as long as it lives, even when its task is aborted.
struct Connected<'a>(&'a Stats);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.ws_connected.fetch_sub(1, Ordering::Relaxed);
    }
}
