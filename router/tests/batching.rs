//! When a batch goes out: events that already waited `max_age_ms` in the log (the end of a
//! backlog) are delivered as soon as the reader has caught up, fresh ones still wait for their
//! batch to fill, and a backlog still fills batches to their size limits.

mod common;

use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use common::{append_raw, destination, metrics, setup, start, wait_for, Receiver};
use sluice_transformer::Registry;

/// `n` track events received `ago` before now, each with `pad` bytes of payload.
fn events(tag: &str, n: usize, ago: chrono::Duration, pad: usize) -> (Vec<String>, Vec<String>) {
    let received = (Utc::now() - ago).to_rfc3339_opts(SecondsFormat::Millis, true);
    let ids: Vec<String> = (0..n).map(|i| format!("{tag}{i}")).collect();
    let events = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                r#"{{"type":"track","event":"e","userId":"u{}","messageId":"{id}","receivedAt":"{received}","properties":{{"pad":"{}"}}}}"#,
                i % 7,
                "x".repeat(pad)
            )
        })
        .collect();
    (ids, events)
}

const SLOW_BATCHES: &str = "lanes: 1\nbatch: { max_events: 1000, max_bytes: 67108864, max_age_ms: 4000 }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_backlog_goes_out_at_once_and_fresh_events_wait_for_their_batch() {
    let (_dir, log, dlq) = setup();
    metrics();
    let (rx, url) = Receiver::always(200);
    // A backlog: 30 events received a minute ago, appended before the router starts.
    let (old, backlog) = events("old", 30, chrono::Duration::minutes(1), 10);
    append_raw(&log, &backlog).await;
    let started = Instant::now();
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), vec![destination("hook", &url, SLOW_BATCHES)], None).await;
    // The lag gauge in seconds, sampled while waiting: it counts from the batch's first
    // `receivedAt` when the batch is delivered (and drops to 0 once the worker finds nothing new).
    let mut lag_seconds = 0.0f64;
    wait_for("the backlog", 10, || {
        let gauge = metrics().render().lines().find_map(|l| l.strip_prefix("sluice_destination_lag_seconds{destination=\"hook\"} ").map(|v| v.trim().parse::<f64>().unwrap()));
        lag_seconds = lag_seconds.max(gauge.unwrap_or(0.0));
        rx.ids().len() >= old.len()
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2000), "the backlog's last batch waited {took:?} (max_age 4 s)");
    assert_eq!(rx.count(), 1, "30 events, one batch");
    assert!((59.0..70.0).contains(&lag_seconds), "lag seconds {lag_seconds}: the events were received a minute ago");

    // Fresh events: the batch is not full, so it waits for max_age before it goes.
    let (fresh, live) = events("new", 5, chrono::Duration::zero(), 10);
    let appended = Instant::now();
    append_raw(&log, &live).await;
    wait_for("the fresh events", 10, || rx.ids().len() >= old.len() + fresh.len()).await;
    let waited = appended.elapsed();
    assert!(waited >= Duration::from_millis(3500), "fresh events went out after {waited:?}, before max_age (4 s)");
    assert_eq!(rx.count(), 2);
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_backlog_larger_than_one_read_still_fills_whole_batches() {
    let (_dir, log, dlq) = setup();
    let (rx, url) = Receiver::always(200);
    // 2,500 events of ~5 KB (12 MB): one read returns at most 4 MiB, so a 1,000-event batch
    // takes two reads; that the events are old must not cut it after the first.
    let (ids, backlog) = events("b", 2500, chrono::Duration::minutes(5), 5000);
    for part in backlog.chunks(500) {
        append_raw(&log, part).await;
    }
    let started = Instant::now();
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), vec![destination("hook", &url, SLOW_BATCHES)], None).await;
    wait_for("the backlog", 20, || rx.ids().len() >= ids.len()).await;
    let took = started.elapsed();
    let sizes: Vec<usize> = rx.requests().iter().map(|r| r.body.as_array().map_or(0, Vec::len)).collect();
    assert_eq!(sizes, [1000, 1000, 500], "batch sizes");
    assert_eq!(rx.ids(), ids, "every event once, in order");
    assert!(took < Duration::from_millis(3000), "the backlog's last batch waited: {took:?} (max_age 4 s)");
    router.stop().await;
}
