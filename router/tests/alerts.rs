//! Alerts reach a real chat webhook (an actix-web receiver standing in for Mattermost/Slack):
//! one when events are dead-lettered, one when a destination keeps failing longer than
//! `failing_after_secs`, and no more than one per destination and kind per `min_interval_secs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{append, destination, setup, start, wait_for, Receiver, FAST};
use sluice_router::{AlertsConfig, Alerter};
use sluice_transformer::Registry;

fn alerter(chat_url: &str, failing_after_secs: u64, min_interval_secs: u64) -> Arc<Alerter> {
    Arc::new(Alerter::new(AlertsConfig { webhook_url: chat_url.to_string(), failing_after_secs, min_interval_secs }))
}

/// The `text` of every alert the chat receiver got, in arrival order.
fn texts(chat: &Receiver) -> Vec<String> {
    chat.requests().iter().map(|r| r.body["text"].as_str().expect("alert body has a text").to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_posts_an_alert_naming_the_destination_and_the_entry_once_per_interval() {
    let (_dir, log, dlq) = setup();
    let (chat, chat_url) = Receiver::always(200);
    let (hook, url) = Receiver::always(400);
    // failing_after_secs is long so that only the dead-letter kind can fire here.
    let alerts = alerter(&chat_url, 300, 300);
    let config = destination("orders-hook", &url, &format!("lanes: 1\n{FAST}"));
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), vec![config], Some(alerts.clone())).await;

    append(&log, "a", 3, 6).await;
    wait_for("the dead-letter alert", 10, || chat.count() >= 1).await;
    // The entry is stored before the alert is posted, so it is there to be named.
    let entries = dlq.ids(Some("orders-hook")).unwrap();
    assert_eq!(entries.len(), 1, "one permanent failure, one entry");
    let entry_id = &entries[0].1;
    let text = &texts(&chat)[0];
    for want in ["dead-lettered 6 event(s)", "`orders-hook`", entry_id.as_str(), "400", "sluice dlq replay --destination orders-hook"] {
        assert!(text.contains(want), "alert text lacks {want:?}: {text}");
    }
    assert_eq!(chat.requests()[0].body["username"], "sluice");

    // A second permanent failure within min_interval_secs is dead-lettered like the first, but
    // the chat is not told again: an outage is one message, not one per batch.
    append(&log, "b", 3, 6).await;
    wait_for("the second dead letter", 10, || dlq.ids(Some("orders-hook")).unwrap().len() == 2).await;
    // The alert is decided in a spawned task after the entry is written: wait for the decision
    // (held back), then no second post can be under way.
    wait_for("the second alert to be held back", 10, || alerts.throttled() >= 1).await;
    router.stop().await;
    assert_eq!(hook.count(), 2, "a 400 is not retried");
    assert_eq!(texts(&chat).len(), 1, "throttled within min_interval_secs: {:?}", texts(&chat));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_failing_longer_than_failing_after_posts_one_alert_per_destination() {
    let (_dir, log, dlq) = setup();
    let (chat, chat_url) = Receiver::always(200);
    let (hook, url) = Receiver::always(503);
    let alerts = alerter(&chat_url, 1, 3600);
    let alerter_handle = alerts.clone();
    // Retries every 20-100 ms for as long as the test runs: the batch is never dead-lettered, so
    // any alert is of the "failing" kind. Two destinations, to see that throttling is per
    // destination and not global.
    let retry = "lanes: 1\nbatch: { max_age_ms: 50 }\nretry: { initial_backoff_ms: 20, max_backoff_ms: 100, max_attempts: 100000 }\n";
    let configs = vec![destination("flaky-a", &url, retry), destination("flaky-b", &url, retry)];
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), configs, Some(alerts)).await;

    append(&log, "f", 5, 10).await;
    wait_for("a failing alert for each destination", 10, || chat.count() >= 2).await;
    let first_failure = hook.requests()[0].at;
    let delays: Vec<Duration> = chat.requests().iter().map(|a| a.at.duration_since(first_failure)).collect();
    println!("failing alerts arrived {delays:?} after the first failed attempt (failing_after_secs: 1)");
    for alert in chat.requests() {
        // Not before failing_after_secs of failure (a little slack: the worker measures from its
        // own clock, taken just before the receiver's).
        let after = alert.at.duration_since(first_failure);
        assert!(after >= Duration::from_millis(900), "alert {after:?} after the first failure: {:?}", alert.body);
    }
    let mut got = texts(&chat);
    got.sort();
    for (text, dest) in got.iter().zip(["flaky-a", "flaky-b"]) {
        for want in [format!("`{dest}`"), "has been failing for".into(), "503".into(), "nothing is lost".into()] {
            assert!(text.contains(&want), "alert text lacks {want:?}: {text}");
        }
    }

    // Keep failing: every further failed attempt decides whether to alert, and each decision is
    // counted. Twenty decisions held back, and still one alert per destination.
    let attempts_before = hook.count();
    let held_before = alerter_handle.throttled();
    wait_for("twenty more alert decisions", 20, || alerter_handle.throttled() >= held_before + 20).await;
    let attempts_during = hook.count() - attempts_before;
    router.stop().await;
    assert_eq!(texts(&chat).len(), 2, "one failing alert per destination within min_interval_secs: {:?}", texts(&chat));
    assert!(dlq.ids(None).unwrap().is_empty(), "retriable failures within max_attempts are not dead-lettered");
    println!("{attempts_during} failed attempts after the alerts, each alert held back, no further alert");
}

/// An alert the chat webhook did not take (it was down) must not count as sent: the next one of
/// the same kind goes out even within `min_interval_secs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_the_chat_refused_does_not_hold_back_the_next_one() {
    let (_dir, log, dlq) = setup();
    // The chat answers 503 to its first post, then 200.
    let (chat, chat_url) = Receiver::start(|n| common::Reply::status(if n == 0 { 503 } else { 200 }));
    let (_hook, url) = Receiver::always(400);
    let alerts = alerter(&chat_url, 300, 300);
    let config = destination("orders-hook", &url, &format!("lanes: 1\n{FAST}"));
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), vec![config], Some(alerts)).await;

    append(&log, "a", 1, 2).await;
    wait_for("the first (refused) alert", 10, || chat.count() >= 1).await;
    append(&log, "b", 1, 2).await;
    wait_for("the second alert", 10, || chat.count() >= 2).await;
    router.stop().await;
    let statuses: Vec<u16> = chat.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 200], "the refused alert was followed by the next one");
    assert!(texts(&chat)[1].contains("dead-lettered 2 event(s)"), "{:?}", texts(&chat));
}
