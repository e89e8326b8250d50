//! The chat core's HTTP API and WebSocket against the real binary (analytics off): every error
//! path answers with its status and a Mattermost-shaped body, and a post fans out to the
//! members' WebSockets and to nobody else; data survives a restart.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(data: &std::path::Path) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_chat-core"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--analytics", "off", "--workers", "1"])
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}/api/v4");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{base}/system/ping")).await.is_err() {
        assert!(Instant::now() < deadline, "chat-core did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server { child, base }
}

async fn req(method: &str, url: String, token: Option<&str>, body: Option<Value>) -> (u16, Value, Option<String>) {
    let c = reqwest::Client::new();
    let mut r = c.request(method.parse().unwrap(), url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    let status = res.status().as_u16();
    let token = res.headers().get("Token").map(|v| v.to_str().unwrap().to_string());
    let v = res.json::<Value>().await.unwrap_or(Value::Null);
    (status, v, token)
}

async fn user(s: &Server, name: &str) -> (String, String) {
    let body = json!({"username": name, "email": format!("{name}@x.test"), "password": "pw", "first_name": "F", "last_name": "L"});
    let (status, _, _) = req("POST", format!("{}/users", s.base), None, Some(body)).await;
    assert_eq!(status, 201);
    let (status, v, token) = req("POST", format!("{}/users/login", s.base), None, Some(json!({"login_id": name, "password": "pw"}))).await;
    assert_eq!(status, 200);
    (v["id"].as_str().unwrap().to_string(), token.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_fan_out_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let b = &s.base;
    let (ana_id, ana) = user(&s, "ana").await;
    let (bo_id, bo) = user(&s, "bo").await;
    let (_, cy) = user(&s, "cy").await;

    let dup = json!({"username": "ana", "email": "other@x.test", "password": "pw"});
    let (status, v, _) = req("POST", format!("{b}/users"), None, Some(dup)).await;
    assert_eq!((status, v["status_code"].as_u64()), (409, Some(409)), "{v}");
    assert_eq!(req("POST", format!("{b}/users"), None, Some(json!({"username": "z", "email": "no-at", "password": "pw"}))).await.0, 400);
    assert_eq!(req("POST", format!("{b}/users/login"), None, Some(json!({"login_id": "ana", "password": "wrong"}))).await.0, 401);
    let (status, v, _) = req("POST", format!("{b}/users"), None, None).await;
    assert_eq!(status, 400, "a missing body is a bad request: {v}");

    let (_, team, _) = req("POST", format!("{b}/teams"), Some(&ana), Some(json!({"name": "t1"}))).await;
    let team_id = team["id"].as_str().unwrap().to_string();
    assert_eq!(req("POST", format!("{b}/teams/{team_id}/members"), Some(&bo), Some(json!({"user_id": bo_id}))).await.0, 201);
    let (status, ch, _) = req("POST", format!("{b}/channels"), Some(&ana), Some(json!({"team_id": team_id, "name": "general"}))).await;
    assert_eq!(status, 201);
    let ch_id = ch["id"].as_str().unwrap().to_string();
    assert_eq!(req("POST", format!("{b}/channels"), Some(&ana), Some(json!({"team_id": team_id, "name": "x", "type": "Q"}))).await.0, 400);
    assert_eq!(req("POST", format!("{b}/channels"), Some(&cy), Some(json!({"team_id": team_id, "name": "y"}))).await.0, 403);
    assert_eq!(req("POST", format!("{b}/channels/{ch_id}/members"), Some(&bo), Some(json!({"user_id": bo_id}))).await.0, 201);

    // bo and cy listen; cy is not in the channel.
    let ws = |t: &str| format!("{}/websocket?token={t}", b.replacen("http", "ws", 1));
    let (mut bo_ws, _) = tokio_tungstenite::connect_async(ws(&bo)).await.unwrap();
    let (mut cy_ws, _) = tokio_tungstenite::connect_async(ws(&cy)).await.unwrap();
    for sock in [&mut bo_ws, &mut cy_ws] {
        let hello = sock.next().await.unwrap().unwrap().into_text().unwrap();
        assert!(hello.contains("\"hello\""), "{hello}");
    }
    assert_eq!(req("POST", format!("{b}/posts"), None, Some(json!({"channel_id": ch_id, "message": "hi"}))).await.0, 401);
    assert_eq!(req("POST", format!("{b}/posts"), Some("nonsense"), Some(json!({"channel_id": ch_id, "message": "hi"}))).await.0, 401);
    assert_eq!(req("POST", format!("{b}/posts"), Some(&ana), Some(json!({"channel_id": ch_id, "message": "  "}))).await.0, 400);
    let long = "x".repeat(16384);
    assert_eq!(req("POST", format!("{b}/posts"), Some(&ana), Some(json!({"channel_id": ch_id, "message": long}))).await.0, 400);
    assert_eq!(req("POST", format!("{b}/posts"), Some(&cy), Some(json!({"channel_id": ch_id, "message": "hi"}))).await.0, 403);
    assert_eq!(req("POST", format!("{b}/posts"), Some(&ana), Some(json!({"channel_id": "nope", "message": "hi"}))).await.0, 404);
    assert_eq!(req("POST", format!("{b}/posts"), Some(&ana), Some(json!({"channel_id": ch_id, "message": "hi", "root_id": "nope"}))).await.0, 400);
    let (status, post, _) = req("POST", format!("{b}/posts"), Some(&ana), Some(json!({"channel_id": ch_id, "message": "hello team"}))).await;
    assert_eq!(status, 201);
    let frame = bo_ws.next().await.unwrap().unwrap().into_text().unwrap();
    let v: Value = serde_json::from_str(&frame).unwrap();
    assert_eq!(v["event"], "posted");
    assert!(v["data"]["post"].as_str().unwrap().contains("hello team"));
    let post_id = post["id"].as_str().unwrap().to_string();
    let reply = json!({"channel_id": ch_id, "message": "thread", "root_id": post_id});
    assert_eq!(req("POST", format!("{b}/posts"), Some(&bo), Some(reply)).await.0, 201);
    assert!(bo_ws.next().await.unwrap().unwrap().into_text().unwrap().contains("thread"));
    let react = json!({"user_id": ana_id, "post_id": post_id, "emoji_name": "tada"});
    assert_eq!(req("POST", format!("{b}/reactions"), Some(&ana), Some(react)).await.0, 200);
    assert!(bo_ws.next().await.unwrap().unwrap().into_text().unwrap().contains("reaction_added"));
    assert_eq!(req("POST", format!("{b}/users/me/typing"), Some(&ana), Some(json!({"channel_id": ch_id}))).await.0, 200);
    assert!(bo_ws.next().await.unwrap().unwrap().into_text().unwrap().contains("\"typing\""));
    assert_eq!(req("POST", format!("{b}/channels/members/me/view"), Some(&bo), Some(json!({"channel_id": ch_id}))).await.0, 200);
    assert!(bo_ws.next().await.unwrap().unwrap().into_text().unwrap().contains("channel_viewed"));
    // cy saw none of it: the next frame cy gets is the one sent to cy alone.
    let (_, dm, _) = req("POST", format!("{b}/channels/direct"), Some(&ana), Some(json!([ana_id, cy_id_of(&s, &cy).await]))).await;
    let dm_id = dm["id"].as_str().unwrap().to_string();
    assert_eq!(req("POST", format!("{b}/posts"), Some(&ana), Some(json!({"channel_id": dm_id, "message": "psst"}))).await.0, 201);
    let first_for_cy = cy_ws.next().await.unwrap().unwrap().into_text().unwrap();
    assert!(first_for_cy.contains("psst"), "cy got another channel's frame first: {first_for_cy}");
    assert_eq!(req("DELETE", format!("{b}/channels/{ch_id}/members/me"), Some(&bo), None).await.0, 200);
    assert_eq!(req("POST", format!("{b}/users/logout"), Some(&cy), None).await.0, 200);
    assert_eq!(req("GET", format!("{b}/users/me"), Some(&cy), None).await.0, 401);

    // A restart keeps users, sessions, channels and posts.
    let data = dir.path().to_path_buf();
    drop(s);
    let s = start(&data).await;
    let (status, posts, _) = req("GET", format!("{}/channels/{ch_id}/posts", s.base), Some(&ana), None).await;
    assert_eq!(status, 200);
    assert_eq!(posts["order"].as_array().unwrap().len(), 2, "{posts}");
    assert_eq!(req("GET", format!("{}/channels/{ch_id}/posts", s.base), Some(&bo), None).await.0, 403, "bo left");
}

async fn cy_id_of(s: &Server, token: &str) -> String {
    req("GET", format!("{}/users/me", s.base), Some(token), None).await.1["id"].as_str().unwrap().to_string()
}
