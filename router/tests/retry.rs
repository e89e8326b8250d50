//! How the router treats each kind of webhook answer, end to end: every retriable status is
//! retried until delivered, the others are dead-lettered at once, `Retry-After` (seconds or an
//! HTTP date) holds the next attempt back, and a stop does not wait out a failing batch's retries.
//!
//! Events are appended before the router starts and the destination has one lane, so the first
//! read takes all of them and each attempt is one request carrying the same batch.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{append, destination, setup, sorted, start, wait_for, Receiver, Reply, FAST};
use sluice_transformer::Registry;

/// The receiver answers `first` (with `Retry-After: retry_after` if given) to the first request
/// and 200 afterwards, then checks the outcome for that status. Returns the receiver and the ids.
async fn first_request_answers(first: u16, retry_after: Option<fn() -> String>) -> (Receiver, Vec<String>) {
    let (_dir, log, dlq) = setup();
    let (hook, url) = Receiver::start(move |n| match (n, retry_after) {
        (0, Some(value)) => Reply::status(first).retry_after(value()),
        (0, None) => Reply::status(first),
        _ => Reply::status(200),
    });
    let ids = append(&log, "r", 4, 20).await;
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), vec![destination("hook", &url, &format!("lanes: 1\n{FAST}"))], None).await;
    wait_for("the first request", 10, || hook.count() >= 1).await;
    let retriable = matches!(first, 408 | 429 | 500..=599);
    if retriable {
        wait_for("delivery after the retry", 10, || hook.events().len() >= ids.len()).await;
        wait_for("the cursor", 5, || log.cursor("hook").unwrap() == Some(ids.len() as u64)).await;
    } else {
        wait_for("the dead letter", 10, || !dlq.ids(None).unwrap().is_empty()).await;
    }
    router.stop().await;

    let seen = hook.requests();
    if retriable {
        assert_eq!(sorted(hook.ids()), sorted(ids.clone()), "{first}: every event delivered, once");
        assert_eq!(seen.len(), 2, "{first}: one failed request, one retry");
        assert_eq!(seen[0].body, seen[1].body, "{first}: the retry carries the same batch");
        assert!(dlq.ids(None).unwrap().is_empty(), "{first}: nothing dead-lettered");
    } else {
        assert_eq!(seen.len(), 1, "{first} is permanent: not retried");
        assert!(hook.events().is_empty());
        let entries = dlq.ids(Some("hook")).unwrap();
        assert_eq!(entries.len(), 1);
        let entry = dlq.get("hook", &entries[0].1).unwrap();
        assert_eq!(entry.events.len(), ids.len(), "{first}: the whole batch is dead-lettered");
        assert_eq!(entry.attempts, 1);
        assert!(entry.reason.contains(&first.to_string()), "{first}: reason names the status: {}", entry.reason);
        assert_eq!(log.cursor("hook").unwrap(), Some(ids.len() as u64), "dead-lettered events are done with");
    }
    (hook, ids)
}

fn gap(hook: &Receiver) -> Duration {
    let seen = hook.requests();
    seen[1].at.duration_since(seen[0].at)
}

macro_rules! answers {
    ($($name:ident: $status:expr,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (hook, _) = first_request_answers($status, None).await;
            if hook.count() > 1 {
                println!("{}: retried after {:?}", $status, gap(&hook));
            }
        }
    )*};
}

answers! {
    retried_after_408_request_timeout: 408,
    retried_after_429_too_many_requests: 429,
    retried_after_500_internal_server_error: 500,
    retried_after_502_bad_gateway: 502,
    retried_after_503_service_unavailable: 503,
    retried_after_504_gateway_timeout: 504,
    dead_lettered_after_301_redirect: 301,
    dead_lettered_after_401_unauthorized: 401,
    dead_lettered_after_404_not_found: 404,
    dead_lettered_after_422_unprocessable: 422,
}

// The backoff of these tests is 20-100 ms, so a retry 900 ms or more later can only come from
// Retry-After. Lower bounds only: this checks that the wait is honoured, not how fast anything is.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_in_seconds_holds_the_retry_back() {
    let (hook, _) = first_request_answers(429, Some(|| "1".into())).await;
    let gap = gap(&hook);
    println!("429 with Retry-After: 1 retried after {gap:?}");
    assert!(gap >= Duration::from_millis(900), "retried {gap:?} after a 429 with Retry-After: 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_as_an_http_date_holds_the_retry_back() {
    // Two seconds ahead, in whole seconds (IMF-fixdate has no fraction): a wait of 1-2 s.
    let date = || (chrono::Utc::now() + chrono::Duration::seconds(2)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let (hook, _) = first_request_answers(503, Some(date)).await;
    let gap = gap(&hook);
    println!("503 with Retry-After: <now + 2 s as an HTTP date> retried after {gap:?}");
    assert!(gap >= Duration::from_millis(900), "retried {gap:?} after a 503 with a Retry-After date 2 s ahead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_does_not_wait_out_a_failing_batch_and_the_batch_is_delivered_after_the_restart() {
    let (_dir, log, dlq) = setup();
    let status = Arc::new(AtomicU16::new(503));
    let answer = status.clone();
    // An hour of Retry-After and a retry policy that would go on for hours: before the fix, stop()
    // only returned once the batch was delivered or dead-lettered.
    let (hook, url) = Receiver::start(move |_| match answer.load(Ordering::SeqCst) {
        503 => Reply::status(503).retry_after("3600"),
        s => Reply::status(s),
    });
    let config = destination(
        "hook",
        &url,
        "lanes: 4\nbatch: { max_age_ms: 50 }\nretry: { initial_backoff_ms: 1000, max_backoff_ms: 60000, max_attempts: 1000, max_age_secs: 36000 }\n",
    );
    let ids = append(&log, "s", 8, 40).await;
    let registry = Registry::load(&[]).unwrap();
    let router = start(&log, &dlq, &registry, vec![config.clone()], None).await;
    wait_for("the first failed attempts", 10, || hook.count() >= 1).await;

    let t0 = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), router.stop()).await.expect("stop() waited for the retries");
    println!("stop() returned after {:?} with a batch waiting on Retry-After: 3600", t0.elapsed());
    assert_eq!(log.cursor("hook").unwrap(), None, "the cursor does not move past an undelivered batch");
    assert!(dlq.ids(None).unwrap().is_empty(), "a stop is not a reason to dead-letter");

    status.store(200, Ordering::SeqCst);
    let router = start(&log, &dlq, &registry, vec![config], None).await;
    wait_for("delivery after the restart", 10, || hook.events().len() >= ids.len()).await;
    wait_for("the cursor", 5, || log.cursor("hook").unwrap() == Some(ids.len() as u64)).await;
    router.stop().await;
    assert_eq!(sorted(hook.ids()), sorted(ids));
}
