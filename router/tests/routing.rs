//! Which destination gets which event: a destination's `sources:` list and the event's
//! `integrations` object (Segment semantics), through the router to real receivers.

mod common;

use common::{append_raw, destination, setup, sorted, start, wait_for, Receiver, FAST};
use sluice_eventlog::AppendBatch;
use sluice_transformer::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_and_integrations_decide_which_destination_takes_an_event() {
    let (_dir, log, dlq) = setup();
    let (web_raw, web_url) = Receiver::always(200);
    let (everything, all_url) = Receiver::always(200);
    let configs = vec![
        destination("web-raw", &web_url, &format!("sources: [web]\n{FAST}")),
        destination("everything", &all_url, FAST),
    ];
    let router = start(&log, &dlq, &Registry::load(&[]).unwrap(), configs, None).await;

    let ev = |id: &str, integrations: &str| {
        format!(r#"{{"type":"track","event":"e","userId":"u","messageId":"{id}"{integrations}}}"#)
    };
    append_raw(
        &log,
        &[
            ev("web-plain", ""),
            ev("web-all-off", r#","integrations":{"All":false}"#),
            ev("web-only-raw", r#","integrations":{"All":false,"web-raw":true}"#),
            ev("web-not-raw", r#","integrations":{"web-raw":false}"#),
            ev("web-no-webhooks", r#","integrations":{"Webhook":false,"everything":true}"#),
        ],
    )
    .await;
    // The same kinds of event from another source: web-raw never takes them.
    let mut batch = AppendBatch::default();
    for e in [ev("ios-plain", ""), ev("ios-asks-raw", r#","integrations":{"All":false,"web-raw":true}"#)] {
        batch.push_event("ios", "", e.as_bytes());
    }
    log.append(batch).await.unwrap();
    // A last event both take, so that once it arrived everything before it was decided.
    append_raw(&log, &[ev("web-last", "")]).await;

    wait_for("web-raw's last event", 10, || web_raw.ids().contains(&"web-last".to_string())).await;
    wait_for("everything's last event", 10, || everything.ids().contains(&"web-last".to_string())).await;
    wait_for("both cursors at the end", 10, || {
        log.cursor("web-raw").unwrap() == Some(8) && log.cursor("everything").unwrap() == Some(8)
    })
    .await;
    router.stop().await;
    assert_eq!(sorted(web_raw.ids()), sorted(vec!["web-plain".into(), "web-only-raw".into(), "web-last".into()]));
    assert_eq!(
        sorted(everything.ids()),
        sorted(vec!["web-plain".into(), "web-not-raw".into(), "web-no-webhooks".into(), "ios-plain".into(), "web-last".into()])
    );
}
