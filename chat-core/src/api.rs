//! The HTTP JSON API, shaped after Mattermost's v4 API. Every action that a user takes emits one
//! analytics event (two on sign-up and login: `identify` and a `track`); the catalogue is in
//! docs/chat-core.md. Reads of data (GET) are not actions and emit nothing.
//!
//! Order inside an action: the database change, then the WebSocket fan-out, then the analytics
//! event, then the answer. The event is durably queued (and in the ledger) before the user hears
//! that the action succeeded.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::analytics::Analytics;
use crate::hub::{ChannelInfo, Frame, Hub};
use crate::store::{Channel, Store};
use crate::ChatError;

/// Longest post Mattermost accepts, in characters.
pub const MAX_POST_CHARS: usize = 16383;

pub struct AppState {
    pub store: Arc<Store>,
    pub hub: Hub,
    pub analytics: Analytics,
}

pub type State = web::Data<AppState>;

/// The authenticated caller of a request.
pub struct Caller {
    pub user_id: String,
    pub token: String,
    /// What the client calls itself (`X-Chat-Client`), for the events' `context.client`.
    pub client: String,
}

fn bearer(req: &HttpRequest) -> Option<String> {
    let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    if let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))) {
        return Some(token.trim().to_string());
    }
    // Browsers cannot set headers on a WebSocket handshake.
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
}

pub fn client_name(req: &HttpRequest) -> String {
    req.headers()
        .get("x-chat-client")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(40).collect())
        .unwrap_or_else(|| "api".to_string())
}

pub async fn caller(req: &HttpRequest, state: &State) -> Result<Caller, ChatError> {
    let token = bearer(req).ok_or_else(|| ChatError::Unauthorized("missing token (Authorization: Bearer ...)".into()))?;
    let user_id = match state.hub.token_user(&token) {
        Some(u) => u,
        None => {
            let store = state.store.clone();
            let t = token.clone();
            let found = web::block(move || store.session_user(&t)).await??;
            let u = found.ok_or_else(|| ChatError::Unauthorized("invalid or expired token".into()))?;
            state.hub.put_token(&token, &u);
            u
        }
    };
    Ok(Caller { user_id, token, client: client_name(req) })
}

/// The channel and its members, from the cache or the database.
pub async fn channel_info(state: &State, id: &str) -> Result<Arc<ChannelInfo>, ChatError> {
    if let Some(info) = state.hub.channel(id) {
        return Ok(info);
    }
    let store = state.store.clone();
    let id = id.to_string();
    let (channel, members) = web::block(move || Ok::<_, ChatError>((store.channel(&id)?, store.channel_members(&id)?))).await??;
    Ok(state.hub.put_channel(ChannelInfo { channel, members }))
}

fn member_of(info: &ChannelInfo, user: &str) -> Result<(), ChatError> {
    if info.members.iter().any(|m| m == user) {
        Ok(())
    } else {
        Err(ChatError::Forbidden(format!("not a member of channel {}", info.channel.id)))
    }
}

fn channel_props(c: &Channel) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("team_id".into(), json!(c.team_id));
    m.insert("channel_id".into(), json!(c.id));
    m.insert("channel_type".into(), json!(c.type_name()));
    m
}

fn frame(event: &str, data: serde_json::Value, channel_id: &str) -> Frame {
    Arc::from(json!({"event": event, "data": data, "broadcast": {"channel_id": channel_id}}).to_string())
}

fn nonblank(field: &str, v: &str) -> Result<(), ChatError> {
    if v.trim().is_empty() {
        Err(ChatError::BadRequest(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    email: String,
    password: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
}

fn user_traits(u: &crate::store::User) -> serde_json::Value {
    json!({
        "name": format!("{} {}", u.first_name, u.last_name).trim(),
        "first_name": u.first_name,
        "last_name": u.last_name,
        "email": u.email,
        "username": u.username,
        "created_at": u.create_at,
    })
}

async fn create_user(req: HttpRequest, state: State, body: web::Json<NewUser>) -> Result<HttpResponse, ChatError> {
    let b = body.into_inner();
    nonblank("username", &b.username)?;
    nonblank("password", &b.password)?;
    if !b.email.contains('@') {
        return Err(ChatError::BadRequest("email must be an email address".into()));
    }
    let store = state.store.clone();
    let user = web::block(move || store.create_user(&b.username, &b.email, &b.password, &b.first_name, &b.last_name)).await??;
    let client = client_name(&req);
    state.analytics.identify(&user.id, user_traits(&user), &client).await;
    state.analytics.track(&user.id, "Signed Up", json!({}), &client).await;
    Ok(HttpResponse::Created().json(user))
}

#[derive(Deserialize)]
struct Login {
    login_id: String,
    password: String,
}

async fn login(req: HttpRequest, state: State, body: web::Json<Login>) -> Result<HttpResponse, ChatError> {
    let b = body.into_inner();
    let store = state.store.clone();
    let (user, token) = web::block(move || store.login(&b.login_id, &b.password)).await??;
    state.hub.put_token(&token, &user.id);
    let client = client_name(&req);
    state.analytics.identify(&user.id, user_traits(&user), &client).await;
    state.analytics.track(&user.id, "Logged In", json!({}), &client).await;
    Ok(HttpResponse::Ok().insert_header(("Token", token)).json(user))
}

async fn logout(req: HttpRequest, state: State) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let store = state.store.clone();
    let token = c.token.clone();
    web::block(move || store.logout(&token)).await??;
    state.hub.forget_token(&c.token);
    state.analytics.track(&c.user_id, "Logged Out", json!({}), &c.client).await;
    Ok(HttpResponse::Ok().json(json!({"status": "OK"})))
}

async fn me(req: HttpRequest, state: State) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let store = state.store.clone();
    Ok(HttpResponse::Ok().json(web::block(move || store.user(&c.user_id)).await??))
}

#[derive(Deserialize)]
struct NewTeam {
    name: String,
    #[serde(default)]
    display_name: String,
}

async fn create_team(req: HttpRequest, state: State, body: web::Json<NewTeam>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let b = body.into_inner();
    nonblank("name", &b.name)?;
    let store = state.store.clone();
    let user = c.user_id.clone();
    let team = web::block(move || store.create_team(&user, &b.name, &b.display_name)).await??;
    state.analytics.track(&c.user_id, "Team Created", json!({"team_id": team.id}), &c.client).await;
    Ok(HttpResponse::Created().json(team))
}

async fn team_by_name(req: HttpRequest, state: State, name: web::Path<String>) -> Result<HttpResponse, ChatError> {
    caller(&req, &state).await?;
    let store = state.store.clone();
    Ok(HttpResponse::Ok().json(web::block(move || store.team_by_name(&name)).await??))
}

#[derive(Deserialize)]
struct UserRef {
    user_id: String,
}

async fn join_team(req: HttpRequest, state: State, team: web::Path<String>, body: web::Json<UserRef>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let target = body.into_inner().user_id;
    let store = state.store.clone();
    let (team_id, actor) = (team.into_inner(), c.user_id.clone());
    let (count, added) = web::block(move || {
        // Anyone may join an open team; adding someone else takes a member.
        if target != actor && !store.is_team_member(&team_id, &actor)? {
            return Err(ChatError::Forbidden(format!("not a member of team {team_id}")));
        }
        let (count, added) = store.add_team_member(&team_id, &target)?;
        Ok((count, (added, team_id, target)))
    })
    .await??;
    let (added, team_id, target) = added;
    if added {
        let props = json!({"team_id": team_id, "member_count": count, "added_user_id": target, "self": target == c.user_id});
        state.analytics.track(&c.user_id, "Team Joined", props, &c.client).await;
    }
    Ok(HttpResponse::Created().json(json!({"team_id": team_id, "user_id": target})))
}

#[derive(Deserialize)]
struct NewChannel {
    team_id: String,
    name: String,
    #[serde(default)]
    display_name: String,
    #[serde(rename = "type", default = "open")]
    kind: String,
}

fn open() -> String {
    "O".into()
}

async fn create_channel(req: HttpRequest, state: State, body: web::Json<NewChannel>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let b = body.into_inner();
    nonblank("name", &b.name)?;
    if b.kind != "O" && b.kind != "P" {
        return Err(ChatError::BadRequest(format!("type must be O (public) or P (private), got {:?}", b.kind)));
    }
    let store = state.store.clone();
    let user = c.user_id.clone();
    let channel = web::block(move || {
        if !store.is_team_member(&b.team_id, &user)? {
            return Err(ChatError::Forbidden(format!("not a member of team {}", b.team_id)));
        }
        store.create_channel(&user, &b.team_id, &b.name, &b.display_name, &b.kind)
    })
    .await??;
    state.analytics.track(&c.user_id, "Channel Created", json!(channel_props(&channel)), &c.client).await;
    Ok(HttpResponse::Created().json(channel))
}

async fn create_direct(req: HttpRequest, state: State, body: web::Json<Vec<String>>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let ids = body.into_inner();
    if ids.len() != 2 || !ids.contains(&c.user_id) {
        return Err(ChatError::BadRequest("a direct channel takes two user ids, one of them the caller's".into()));
    }
    let store = state.store.clone();
    let (channel, created) = web::block(move || {
        store.user(&ids[0])?;
        store.user(&ids[1])?;
        store.direct_channel(&ids[0], &ids[1])
    })
    .await??;
    if created {
        state.analytics.track(&c.user_id, "Channel Created", json!(channel_props(&channel)), &c.client).await;
        Ok(HttpResponse::Created().json(channel))
    } else {
        Ok(HttpResponse::Ok().json(channel))
    }
}

async fn get_channel(req: HttpRequest, state: State, id: web::Path<String>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let info = channel_info(&state, &id).await?;
    if info.channel.kind != "O" {
        member_of(&info, &c.user_id)?;
    }
    Ok(HttpResponse::Ok().json(json!({"channel": info.channel, "member_count": info.members.len()})))
}

async fn join_channel(req: HttpRequest, state: State, id: web::Path<String>, body: web::Json<UserRef>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let target = body.into_inner().user_id;
    let info = channel_info(&state, &id).await?;
    let ch = info.channel.clone();
    match ch.kind.as_str() {
        "D" => return Err(ChatError::BadRequest("members of a direct channel cannot change".into())),
        "P" => member_of(&info, &c.user_id)?,
        _ => {}
    }
    let store = state.store.clone();
    let (actor, t) = (c.user_id.clone(), target.clone());
    let team = ch.team_id.clone();
    let channel_id = ch.id.clone();
    let added = web::block(move || {
        if !store.is_team_member(&team, &actor)? || !store.is_team_member(&team, &t)? {
            return Err(ChatError::Forbidden(format!("both users must be members of team {team}")));
        }
        store.add_channel_member(&channel_id, &t)
    })
    .await??;
    if added {
        state.hub.forget_channel(&ch.id);
        let mut props = channel_props(&ch);
        props.insert("member_count".into(), json!(info.members.len() + 1));
        props.insert("added_user_id".into(), json!(target));
        props.insert("self".into(), json!(target == c.user_id));
        state.analytics.track(&c.user_id, "Channel Joined", json!(props), &c.client).await;
    }
    Ok(HttpResponse::Created().json(json!({"channel_id": ch.id, "user_id": target})))
}

async fn leave_channel(req: HttpRequest, state: State, path: web::Path<(String, String)>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let (channel_id, target) = path.into_inner();
    let target = if target == "me" { c.user_id.clone() } else { target };
    if target != c.user_id {
        return Err(ChatError::Forbidden("only leaving yourself is supported".into()));
    }
    let info = channel_info(&state, &channel_id).await?;
    if info.channel.kind == "D" {
        return Err(ChatError::BadRequest("a direct channel cannot be left".into()));
    }
    let store = state.store.clone();
    let (cid, t) = (channel_id.clone(), target.clone());
    let removed = web::block(move || store.remove_channel_member(&cid, &t)).await??;
    if !removed {
        return Err(ChatError::NotFound(format!("user {target} in channel {channel_id}")));
    }
    state.hub.forget_channel(&channel_id);
    let mut props = channel_props(&info.channel);
    props.insert("member_count".into(), json!(info.members.len().saturating_sub(1)));
    state.analytics.track(&c.user_id, "Channel Left", json!(props), &c.client).await;
    Ok(HttpResponse::Ok().json(json!({"status": "OK"})))
}

#[derive(Deserialize)]
struct PostsQuery {
    #[serde(default)]
    since: i64,
    #[serde(default = "per_page")]
    per_page: i64,
}

fn per_page() -> i64 {
    60
}

async fn channel_posts(req: HttpRequest, state: State, id: web::Path<String>, q: web::Query<PostsQuery>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let info = channel_info(&state, &id).await?;
    member_of(&info, &c.user_id)?;
    let store = state.store.clone();
    let limit = q.per_page.clamp(1, 200);
    let since = q.since;
    let posts = web::block(move || store.channel_posts(&id, since, limit)).await??;
    let order: Vec<&str> = posts.iter().rev().map(|p| p.id.as_str()).collect();
    Ok(HttpResponse::Ok().json(json!({"order": order, "posts": posts})))
}

#[derive(Deserialize)]
struct NewPost {
    channel_id: String,
    message: String,
    #[serde(default)]
    root_id: String,
}

async fn create_post(req: HttpRequest, state: State, body: web::Json<NewPost>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let b = body.into_inner();
    nonblank("message", &b.message)?;
    let length = b.message.chars().count();
    if length > MAX_POST_CHARS {
        return Err(ChatError::BadRequest(format!("message has {length} characters, at most {MAX_POST_CHARS} are allowed")));
    }
    let info = channel_info(&state, &b.channel_id).await?;
    member_of(&info, &c.user_id)?;
    let store = state.store.clone();
    let user = c.user_id.clone();
    let post = web::block(move || store.create_post(&user, &b.channel_id, &b.message, &b.root_id)).await??;
    let data = json!({"post": serde_json::to_string(&post).unwrap_or_default(), "channel_type": info.channel.kind, "sender_id": post.user_id});
    let delivered = state.hub.send_to(&info.members, None, &frame("posted", data, &post.channel_id));
    let mut props = channel_props(&info.channel);
    props.insert("post_id".into(), json!(post.id));
    props.insert("length".into(), json!(length));
    props.insert("is_reply".into(), json!(!post.root_id.is_empty()));
    if !post.root_id.is_empty() {
        props.insert("root_id".into(), json!(post.root_id));
    }
    props.insert("member_count".into(), json!(info.members.len()));
    props.insert("fanout".into(), json!(delivered));
    state.analytics.track(&c.user_id, "Post Created", json!(props), &c.client).await;
    Ok(HttpResponse::Created().json(post))
}

#[derive(Deserialize)]
struct NewReaction {
    user_id: String,
    post_id: String,
    emoji_name: String,
}

async fn add_reaction(req: HttpRequest, state: State, body: web::Json<NewReaction>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let b = body.into_inner();
    if b.user_id != c.user_id {
        return Err(ChatError::Forbidden("reactions are added as yourself".into()));
    }
    nonblank("emoji_name", &b.emoji_name)?;
    let store = state.store.clone();
    let pid = b.post_id.clone();
    let post = web::block(move || store.post(&pid)).await??;
    let info = channel_info(&state, &post.channel_id).await?;
    member_of(&info, &c.user_id)?;
    let store = state.store.clone();
    let (u, p, e) = (c.user_id.clone(), b.post_id.clone(), b.emoji_name.clone());
    let added = web::block(move || store.add_reaction(&u, &p, &e)).await??;
    let reaction = json!({"user_id": c.user_id, "post_id": b.post_id, "emoji_name": b.emoji_name});
    if added {
        let data = json!({"reaction": reaction.to_string()});
        let delivered = state.hub.send_to(&info.members, None, &frame("reaction_added", data, &post.channel_id));
        let mut props = channel_props(&info.channel);
        props.insert("post_id".into(), json!(b.post_id));
        props.insert("emoji".into(), json!(b.emoji_name));
        props.insert("fanout".into(), json!(delivered));
        state.analytics.track(&c.user_id, "Reaction Added", json!(props), &c.client).await;
    }
    Ok(HttpResponse::Ok().json(reaction))
}

#[derive(Deserialize)]
struct View {
    channel_id: String,
}

/// Marks a channel read. Like Mattermost, `channel_viewed` goes to the viewer's own connections
/// (other tabs and devices clear their unread badge); other members are not told.
async fn view_channel(req: HttpRequest, state: State, who: web::Path<String>, body: web::Json<View>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let who = who.into_inner();
    if who != "me" && who != c.user_id {
        return Err(ChatError::Forbidden("only your own read marker can be set".into()));
    }
    let channel_id = body.into_inner().channel_id;
    let info = channel_info(&state, &channel_id).await?;
    let store = state.store.clone();
    let (u, ch) = (c.user_id.clone(), channel_id.clone());
    let unread = web::block(move || store.view_channel(&u, &ch)).await??;
    let me = [c.user_id.clone()];
    state.hub.send_to(&me, None, &frame("channel_viewed", json!({"channel_id": channel_id}), &channel_id));
    let mut props = channel_props(&info.channel);
    props.insert("unread_count".into(), json!(unread));
    state.analytics.track(&c.user_id, "Channel Viewed", json!(props), &c.client).await;
    Ok(HttpResponse::Ok().json(json!({"status": "OK"})))
}

#[derive(Deserialize)]
pub struct Typing {
    pub channel_id: String,
    #[serde(default)]
    pub parent_id: String,
}

/// Shared by the HTTP endpoint and the WebSocket's `user_typing` action.
pub async fn typing(state: &State, c: &Caller, t: Typing) -> Result<(), ChatError> {
    let info = channel_info(state, &t.channel_id).await?;
    member_of(&info, &c.user_id)?;
    let data = json!({"parent_id": t.parent_id, "user_id": c.user_id});
    let delivered = state.hub.send_to(&info.members, Some(&c.user_id), &frame("typing", data, &t.channel_id));
    let mut props = channel_props(&info.channel);
    props.insert("in_thread".into(), json!(!t.parent_id.is_empty()));
    props.insert("fanout".into(), json!(delivered));
    state.analytics.track(&c.user_id, "Typing Started", json!(props), &c.client).await;
    Ok(())
}

async fn typing_http(req: HttpRequest, state: State, body: web::Json<Typing>) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    typing(&state, &c, body.into_inner()).await?;
    Ok(HttpResponse::Ok().json(json!({"status": "OK"})))
}

async fn ping(state: State) -> HttpResponse {
    let (emitted, refused) = state.analytics.counts();
    HttpResponse::Ok().json(json!({
        "status": "OK",
        "websocket_connections": state.hub.connections(),
        "websocket_deliveries": state.hub.deliveries.load(std::sync::atomic::Ordering::Relaxed),
        "websocket_dropped": state.hub.dropped.load(std::sync::atomic::Ordering::Relaxed),
        "events_emitted": emitted,
        "events_refused": refused,
    }))
}

/// Every route, shared by `main` and the tests.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(256 * 1024).error_handler(|err, _| {
        ChatError::BadRequest(format!("invalid JSON body: {err}")).into()
    }))
    .app_data(web::QueryConfig::default().error_handler(|err, _| ChatError::BadRequest(format!("invalid query: {err}")).into()))
    .service(
        web::scope("/api/v4")
            .route("/system/ping", web::get().to(ping))
            .route("/users", web::post().to(create_user))
            .route("/users/login", web::post().to(login))
            .route("/users/logout", web::post().to(logout))
            .route("/users/me", web::get().to(me))
            .route("/users/me/typing", web::post().to(typing_http))
            .route("/teams", web::post().to(create_team))
            .route("/teams/name/{name}", web::get().to(team_by_name))
            .route("/teams/{team_id}/members", web::post().to(join_team))
            .route("/channels", web::post().to(create_channel))
            .route("/channels/direct", web::post().to(create_direct))
            .route("/channels/members/{user_id}/view", web::post().to(view_channel))
            .route("/channels/{id}", web::get().to(get_channel))
            .route("/channels/{id}/members", web::post().to(join_channel))
            .route("/channels/{id}/members/{user_id}", web::delete().to(leave_channel))
            .route("/channels/{id}/posts", web::get().to(channel_posts))
            .route("/posts", web::post().to(create_post))
            .route("/reactions", web::post().to(add_reaction))
            .route("/websocket", web::get().to(crate::ws::websocket)),
    );
}
