//! The simulated world and the setup phase: users sign up and log in, join one team, and are
//! spread over channels so that a post's average audience matches the profile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::stream::{self, StreamExt};
use rand::seq::SliceRandom;
use serde_json::{json, Value};

use super::Options;

const FIRST_NAMES: [&str; 12] = ["Ana", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kemal", "Lena"];
/// Every simulated last name contains this, and every email ends in [`EMAIL_DOMAIN`], so one
/// search of the delivered bytes for each proves that no name or email got through.
pub const NAME_MARKER: &str = "Loadsim";
pub const EMAIL_DOMAIN: &str = "chat-load.example";

pub struct SimUser {
    pub username: String,
    pub email: String,
    pub first: String,
    pub last: String,
    pub password: String,
    pub id: Mutex<String>,
    pub token: Mutex<String>,
    pub online: AtomicBool,
    /// Indexes into `World::channels`.
    pub small: Mutex<Vec<usize>>,
    pub big: Mutex<Vec<usize>>,
    pub dms: Mutex<Vec<usize>>,
    pub war_room: AtomicBool,
}

impl SimUser {
    pub fn token(&self) -> String {
        self.token.lock().unwrap().clone()
    }
    pub fn id(&self) -> String {
        self.id.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Small,
    Big,
    Direct,
    WarRoom,
}

pub struct SimChannel {
    pub id: String,
    pub kind: Kind,
    pub last_post: Mutex<Option<String>>,
}

pub struct World {
    pub base: String,
    pub http: reqwest::Client,
    pub users: Vec<Arc<SimUser>>,
    pub channels: Vec<SimChannel>,
    pub war_room: Option<usize>,
    /// Probabilities that a post goes to a big channel / a direct channel.
    pub p_big: f64,
    pub p_dm: f64,
}

/// One request; any status but 2xx is an error with the server's message.
pub async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, token: Option<&str>, body: Option<Value>) -> Result<reqwest::Response, String> {
    let mut req = http.request(method, url).header("X-Chat-Client", "chat-load");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.map_err(|e| format!("connection: {e}"))?;
    if res.status().is_success() {
        Ok(res)
    } else {
        let status = res.status().as_u16();
        Err(format!("{status}: {}", res.text().await.unwrap_or_default()))
    }
}

async fn json_of(res: reqwest::Response) -> Result<Value, String> {
    res.json::<Value>().await.map_err(|e| format!("bad JSON answer: {e}"))
}

impl World {
    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v4{path}", self.base)
    }

    pub async fn login(&self, u: &SimUser) -> Result<(), String> {
        let res = call(&self.http, reqwest::Method::POST, self.url("/users/login"), None, Some(json!({"login_id": u.username, "password": u.password}))).await?;
        let token = res.headers().get("Token").and_then(|v| v.to_str().ok()).map(str::to_string).ok_or("login answer without Token")?;
        let body = json_of(res).await?;
        *u.id.lock().unwrap() = body["id"].as_str().unwrap_or_default().to_string();
        *u.token.lock().unwrap() = token;
        Ok(())
    }

    pub async fn logout(&self, u: &SimUser) -> Result<(), String> {
        call(&self.http, reqwest::Method::POST, self.url("/users/logout"), Some(&u.token()), None).await.map(|_| ())
    }
}

fn channel_plan(o: &Options) -> (usize, usize, f64, f64) {
    let big_members = o.big_channel_members.min(o.users);
    let small_size = o.fanout.min(o.users).max(2);
    let p_dm = 0.1;
    // Average audience (members other than the sender) of a post: solve for the big channels' share.
    let small_readers = (small_size - 1) as f64;
    let big_readers = (big_members.saturating_sub(1)) as f64;
    let target = o.fanout as f64;
    let p_big = if o.big_channels == 0 || big_readers <= small_readers {
        0.0
    } else {
        ((target - p_dm * 1.0 - (1.0 - p_dm) * small_readers) / (big_readers - small_readers)).clamp(0.0, 0.5)
    };
    (big_members, small_size, p_big, p_dm)
}

/// Registers, logs in and places every user; prints what it built.
pub async fn setup(o: &Options, run_id: &str) -> Result<World, String> {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| e.to_string())?;
    let users: Vec<Arc<SimUser>> = (0..o.users)
        .map(|i| {
            Arc::new(SimUser {
                username: format!("{run_id}-u{i}"),
                email: format!("{run_id}.u{i}@{EMAIL_DOMAIN}"),
                first: FIRST_NAMES[i % FIRST_NAMES.len()].to_string(),
                last: format!("{NAME_MARKER}{i}"),
                password: format!("pw-{run_id}-{i}"),
                id: Mutex::new(String::new()),
                token: Mutex::new(String::new()),
                online: AtomicBool::new(false),
                small: Mutex::new(Vec::new()),
                big: Mutex::new(Vec::new()),
                dms: Mutex::new(Vec::new()),
                war_room: AtomicBool::new(false),
            })
        })
        .collect();
    let mut world = World { base: o.url.trim_end_matches('/').to_string(), http, users, channels: Vec::new(), war_room: None, p_big: 0.0, p_dm: 0.0 };
    let conc = o.setup_concurrency.max(1);

    // Sign up and log in.
    let w = &world;
    let results: Vec<Result<(), String>> = stream::iter(w.users.iter().cloned())
        .map(|u| async move {
            let body = json!({"username": u.username, "email": u.email, "password": u.password, "first_name": u.first, "last_name": u.last});
            call(&w.http, reqwest::Method::POST, w.url("/users"), None, Some(body)).await?;
            w.login(&u).await
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    first_error("sign-up", results)?;

    // One team; user 0 creates it and the channels, everyone joins.
    let admin = world.users[0].clone();
    let team = json_of(call(&world.http, reqwest::Method::POST, world.url("/teams"), Some(&admin.token()), Some(json!({"name": format!("{run_id}-team"), "display_name": "Load test"}))).await?).await?;
    let team_id = team["id"].as_str().unwrap_or_default().to_string();
    let w = &world;
    let tid = &team_id;
    let results: Vec<Result<(), String>> = stream::iter(w.users.iter().skip(1).cloned())
        .map(|u| async move {
            call(&w.http, reqwest::Method::POST, w.url(&format!("/teams/{tid}/members")), Some(&u.token()), Some(json!({"user_id": u.id()}))).await.map(|_| ())
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    first_error("team join", results)?;

    let (big_members, small_size, p_big, p_dm) = channel_plan(o);
    world.p_big = p_big;
    world.p_dm = p_dm;
    let n = world.users.len();
    let mut rng = rand::rng();
    // Membership plan: (channel name, kind, member indexes).
    let mut plan: Vec<(String, Kind, Vec<usize>)> = Vec::new();
    for b in 0..o.big_channels {
        let mut members: Vec<usize> = (0..n).collect();
        members.shuffle(&mut rng);
        members.truncate(big_members);
        plan.push((format!("big-{b}"), Kind::Big, members));
    }
    // Each user is in three small channels.
    let smalls = (n * 3).div_ceil(small_size).max(1);
    let mut order: Vec<usize> = (0..n).chain(0..n).chain(0..n).collect();
    order.shuffle(&mut rng);
    for s in 0..smalls {
        let mut members: Vec<usize> = order.iter().skip(s * small_size).take(small_size).copied().collect();
        members.sort_unstable();
        members.dedup();
        if !members.is_empty() {
            plan.push((format!("small-{s}"), Kind::Small, members));
        }
    }
    if o.war_room_rate > 0.0 {
        let mut members: Vec<usize> = (0..n).collect();
        members.shuffle(&mut rng);
        members.truncate(o.war_room_members.min(n).max(2));
        plan.push(("war-room".into(), Kind::WarRoom, members));
    }
    for (name, kind, members) in plan {
        let kind_code = if kind == Kind::Small && name.ends_with('3') { "P" } else { "O" };
        let creator = world.users[members[0]].clone();
        let body = json!({"team_id": team_id, "name": name, "display_name": name, "type": kind_code});
        let ch = json_of(call(&world.http, reqwest::Method::POST, world.url("/channels"), Some(&creator.token()), Some(body)).await?).await?;
        let cid = ch["id"].as_str().unwrap_or_default().to_string();
        let w = &world;
        let cref = &cid;
        let creator_ref = &creator;
        let results: Vec<Result<(), String>> = stream::iter(members.iter().skip(1).copied())
            .map(|m| async move {
                let u = &w.users[m];
                // A private channel's members are added by a member; public ones are joined.
                let actor = if kind_code == "P" { creator_ref.token() } else { u.token() };
                call(&w.http, reqwest::Method::POST, w.url(&format!("/channels/{cref}/members")), Some(&actor), Some(json!({"user_id": u.id()}))).await.map(|_| ())
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        first_error(&format!("joining {name}"), results)?;
        let idx = world.channels.len();
        world.channels.push(SimChannel { id: cid, kind, last_post: Mutex::new(None) });
        for m in members {
            let u = &world.users[m];
            match kind {
                Kind::Big => u.big.lock().unwrap().push(idx),
                Kind::Small => u.small.lock().unwrap().push(idx),
                Kind::WarRoom => u.war_room.store(true, Ordering::Relaxed),
                Kind::Direct => {}
            }
        }
        if kind == Kind::WarRoom {
            world.war_room = Some(idx);
        }
    }
    // A direct channel with the next user.
    for i in 0..n {
        let (a, b) = (world.users[i].clone(), world.users[(i + 1) % n].clone());
        let ch = json_of(call(&world.http, reqwest::Method::POST, world.url("/channels/direct"), Some(&a.token()), Some(json!([a.id(), b.id()]))).await?).await?;
        let idx = world.channels.len();
        world.channels.push(SimChannel { id: ch["id"].as_str().unwrap_or_default().to_string(), kind: Kind::Direct, last_post: Mutex::new(None) });
        a.dms.lock().unwrap().push(idx);
        b.dms.lock().unwrap().push(idx);
    }
    let audience = p_dm + p_big * (big_members.saturating_sub(1)) as f64 + (1.0 - p_dm - p_big) * (small_size - 1) as f64;
    eprintln!(
        "setup: {n} users in team {team_id}; {} big channels of {big_members}, {smalls} small of ~{small_size}, {n} direct{}; \
         posts go {:.2}% to big, {:.0}% to direct channels: {audience:.1} members per post on average",
        o.big_channels,
        if world.war_room.is_some() { format!(", war room of {}", o.war_room_members.min(n).max(2)) } else { String::new() },
        p_big * 100.0,
        p_dm * 100.0,
    );
    Ok(world)
}

fn first_error(what: &str, results: Vec<Result<(), String>>) -> Result<(), String> {
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    match failed.first() {
        Some(e) => Err(format!("{what}: {} failed, first: {e}", failed.len())),
        None => Ok(()),
    }
}
