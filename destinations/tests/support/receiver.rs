//! Test-only: a real HTTP server on 127.0.0.1 that records what a webhook sends and answers as
//! told, for the webhook tests and the conformance suite.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sluice_destinations::LandedIds;

/// What the server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, String),
    /// Never answer (within the test's lifetime).
    Hang,
}

#[derive(Debug)]
pub struct Recorded {
    pub method: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the server answered with.
    pub status: u16,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<Recorded>>,
    /// Replies for the next requests, in order; `Status(200)` once empty.
    replies: Mutex<VecDeque<Reply>>,
    /// `messageId`s whose requests are answered 422, as a receiver that validates events does.
    refused: Mutex<HashSet<String>>,
}

pub struct Receiver {
    /// Carries a token in its query, as real webhook URLs often do.
    pub url: String,
    state: Arc<State>,
}

impl Receiver {
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook?token=abc", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        state.replies.lock().unwrap().extend(replies);
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, state }
    }

    pub fn requests(&self) -> std::sync::MutexGuard<'_, Vec<Recorded>> {
        self.state.requests.lock().unwrap()
    }

    /// From now on, a request carrying an event with this `messageId` is answered 422.
    pub fn refuse(&self, message_id: &str) {
        self.state.refused.lock().unwrap().insert(message_id.to_owned());
    }

    /// The `messageId`s of every event in a request answered 2xx (a body is one event or a JSON
    /// array of them); `objects` counts those requests.
    pub fn landed(&self) -> LandedIds {
        let mut ids = LandedIds::default();
        for request in self.requests().iter().filter(|r| (200..300).contains(&r.status)) {
            for event in events(&request.body) {
                match event.get("messageId").and_then(Value::as_str) {
                    Some(id) => ids.push(id),
                    None => ids.without_id += 1,
                }
            }
            ids.objects += 1;
        }
        ids
    }
}

fn events(body: &[u8]) -> Vec<Value> {
    match serde_json::from_slice(body) {
        Ok(Value::Array(events)) => events,
        Ok(event) => vec![event],
        Err(_) => Vec::new(),
    }
}

async fn answer(state: Arc<State>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().to_string();
    let headers = request.headers().clone();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let refused = {
        let refused = state.refused.lock().unwrap();
        !refused.is_empty()
            && events(&body).iter().any(|e| e.get("messageId").and_then(Value::as_str).is_some_and(|id| refused.contains(id)))
    };
    let reply = if refused {
        Reply::Status(422)
    } else {
        state.replies.lock().unwrap().pop_front().unwrap_or(Reply::Status(200))
    };
    let (status, retry_after, hang) = match reply {
        Reply::Status(s) => (s, None, false),
        Reply::RetryAfter(s, v) => (s, Some(v), false),
        Reply::Hang => (200, None, true),
    };
    state.requests.lock().unwrap().push(Recorded { method, headers, body, status });
    if hang {
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    let mut response = Response::builder().status(status);
    if let Some(value) = retry_after {
        response = response.header("retry-after", value);
    }
    Ok(response.body(Full::new(Bytes::from(format!("{{\"error\": \"status {status} from the test server\"}}")))).unwrap())
}
