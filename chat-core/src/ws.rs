//! `GET /api/v4/websocket`: pushes `posted`, `typing`, `reaction_added` and `channel_viewed`
//! events to the caller's open connections, as Mattermost does, and takes the `user_typing`
//! action from the client. Authenticated with `Authorization: Bearer` or `?token=`.
//!
//! Each connection has a bounded queue: a client that stops reading loses frames (counted in
//! `websocket_dropped` of `/api/v4/system/ping`) instead of growing the server's memory.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::Message;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::api::{caller, typing, State, Typing};
use crate::ChatError;

/// Frames waiting for one slow connection before new ones are dropped.
const QUEUE: usize = 256;

#[derive(Deserialize)]
struct Action {
    action: String,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    data: serde_json::Value,
}

pub async fn websocket(req: HttpRequest, body: web::Payload, state: State) -> Result<HttpResponse, ChatError> {
    let c = caller(&req, &state).await?;
    let (response, mut session, stream) =
        actix_ws::handle(&req, body).map_err(|e| ChatError::BadRequest(format!("websocket handshake: {e}")))?;
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let conn = state.hub.register(&c.user_id, tx);
    let mut stream = stream.max_frame_size(64 * 1024);
    actix_web::rt::spawn(async move {
        let hello = json!({"event": "hello", "data": {"server_version": env!("CARGO_PKG_VERSION")}, "broadcast": {"user_id": c.user_id}});
        let mut open = session.text(hello.to_string()).await.is_ok();
        while open {
            tokio::select! {
                frame = rx.recv() => match frame {
                    Some(text) => open = session.text(&*text).await.is_ok(),
                    None => open = false,
                },
                msg = stream.recv() => match msg {
                    Some(Ok(Message::Ping(bytes))) => open = session.pong(&bytes).await.is_ok(),
                    Some(Ok(Message::Text(text))) => {
                        let reply = handle_action(&state, &c, &text).await;
                        open = session.text(reply.to_string()).await.is_ok();
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => open = false,
                    Some(Ok(_)) => {}
                },
            }
        }
        state.hub.unregister(&c.user_id, conn);
        let _ = session.close(None).await;
    });
    Ok(response)
}

/// Answers an action the way Mattermost does: `{"status": "OK", "seq_reply": seq}`.
async fn handle_action(state: &State, c: &crate::api::Caller, text: &str) -> serde_json::Value {
    let action: Action = match serde_json::from_str(text) {
        Ok(a) => a,
        Err(e) => return json!({"status": "FAIL", "error": {"message": format!("invalid action: {e}")}}),
    };
    let result = match action.action.as_str() {
        "user_typing" => match serde_json::from_value::<Typing>(action.data) {
            Ok(t) => typing(state, c, t).await,
            Err(e) => Err(ChatError::BadRequest(format!("user_typing: {e}"))),
        },
        other => Err(ChatError::BadRequest(format!("unknown action {other:?}"))),
    };
    match result {
        Ok(()) => json!({"status": "OK", "seq_reply": action.seq}),
        Err(e) => json!({"status": "FAIL", "seq_reply": action.seq, "error": {"message": e.to_string()}}),
    }
}
