//! The Snowflake destination against a real fakesnow server (SQL half: create, stage, COPY INTO,
//! MERGE, ALTER, discards) and a real moto server (the S3 stage's upload half).
//! Start both with `scripts/backends.sh start`; the tests fail, not skip, when they are down.

#[path = "support/fakesnow.rs"]
mod fakesnow;
#[path = "support/moto.rs"]
mod moto;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use sluice_destinations::snowflake::{AuthConfig, Secret, SnowflakeDestination, StageConfig};
use sluice_destinations::{Batch, Destination, OutEvent, SinkConfig};

use fakesnow::{Env, Faults};

const T0: &str = "2024-05-01T10:00:00.000Z";
const T1: &str = "2024-05-01T11:00:00.000Z";

fn batch(first_offset: u64, events: &[Value]) -> Batch {
    Batch {
        destination: Arc::from("warehouse"),
        partition: None,
        events: events
            .iter()
            .enumerate()
            .map(|(i, e)| OutEvent {
                offset: first_offset + i as u64,
                source: Arc::from("web"),
                json: e.to_string().into_bytes().into(),
            })
            .collect(),
    }
}

fn track(id: &str, event: &str, properties: Value) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": "anon-1", "userId": "u1", "event": event,
        "receivedAt": T0, "sentAt": T0, "timestamp": T0, "originalTimestamp": T0,
        "context": {"library": {"name": "analytics.js", "version": "2.1"}, "ip": "10.0.0.1"},
        "properties": properties})
}

fn identify(id: &str, user: &str, received_at: &str, traits: Value) -> Value {
    json!({"type": "identify", "messageId": id, "userId": user, "receivedAt": received_at, "traits": traits})
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_type_lands_in_its_tables() {
    let env = Env::new().await;
    let dest = env.destination().await;
    let events = [
        track("t1", "Order Completed", json!({"total": 9.5, "currency": "EUR", "items": [{"sku": "a"}]})),
        track("t2", "Signed Up", json!({"plan": "pro"})),
        identify("i1", "u1", T0, json!({"email": "a@example.com", "age": 30})),
        json!({"type": "page", "messageId": "p1", "anonymousId": "anon-1", "name": "Home", "receivedAt": T0,
            "properties": {"url": "https://example.com/", "path": "/"}}),
        json!({"type": "screen", "messageId": "s1", "userId": "u1", "name": "Settings", "receivedAt": T0,
            "properties": {"dark_mode": true}}),
        json!({"type": "group", "messageId": "g1", "userId": "u1", "groupId": "acme", "receivedAt": T0,
            "traits": {"employees": 120}}),
        json!({"type": "alias", "messageId": "a1", "userId": "u1", "previousId": "anon-1", "receivedAt": T0}),
    ];
    let delivered = dest.deliver(&batch(0, &events)).await.unwrap();
    assert!(delivered.rejected.is_empty(), "{:?}", delivered.rejected);

    for (table, rows) in [
        ("tracks", 2),
        ("order_completed", 1),
        ("signed_up", 1),
        ("identifies", 1),
        ("users", 1),
        ("pages", 1),
        ("screens", 1),
        ("groups", 1),
        ("aliases", 1),
    ] {
        assert_eq!(env.count(table).await, rows, "rows in {table}");
    }
    let order = env.columns("order_completed").await;
    for column in ["id", "anonymous_id", "user_id", "received_at", "sent_at", "timestamp", "original_timestamp",
        "uuid_ts", "event", "event_text", "context_library_name", "context_ip", "total", "currency", "items"]
    {
        assert!(order.contains(&column.to_string()), "order_completed lacks {column}: {order:?}");
    }
    assert!(!env.columns("tracks").await.contains(&"total".to_string()), "tracks has no properties");

    let row = env
        .admin
        .rows(&format!(
            "SELECT id, event, event_text, context_library_name, total, currency, \
             CAST(received_at AS VARCHAR) FROM {}",
            env.table("order_completed")
        ))
        .await;
    let row = &row[0];
    assert_eq!(row[0].as_deref(), Some("t1"));
    assert_eq!(row[1].as_deref(), Some("order_completed"));
    assert_eq!(row[2].as_deref(), Some("Order Completed"));
    assert_eq!(row[3].as_deref(), Some("analytics.js"));
    assert_eq!(row[4].as_deref(), Some("9.5"));
    assert_eq!(row[5].as_deref(), Some("EUR"));
    assert!(row[6].as_deref().unwrap().starts_with("2024-05-01"), "{row:?}");

    assert_eq!(
        env.admin.value(&format!("SELECT email FROM {} WHERE id = 'u1'", env.table("users"))).await.as_deref(),
        Some("a@example.com")
    );
    assert_eq!(
        env.admin.value(&format!("SELECT previous_id FROM {}", env.table("aliases"))).await.as_deref(),
        Some("anon-1")
    );
    assert_eq!(
        env.admin.value(&format!("SELECT employees FROM {}", env.table("groups"))).await.as_deref(),
        Some("120")
    );
    assert_eq!(
        env.admin.value(&format!("SELECT CAST(dark_mode AS VARCHAR) FROM {}", env.table("screens"))).await.as_deref(),
        Some("true")
    );
    // Staged files are removed once loaded.
    let leftovers: Vec<_> = walk(env.stage_dir.path());
    assert!(leftovers.is_empty(), "staged files left behind: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_property_adds_a_column() {
    let env = Env::new().await;
    let dest = env.destination().await;
    dest.deliver(&batch(0, &[track("t1", "Viewed", json!({"color": "red"}))])).await.unwrap();
    assert!(!env.columns("viewed").await.contains(&"size".to_string()));

    dest.deliver(&batch(1, &[track("t2", "Viewed", json!({"color": "blue", "size": 42, "firstSeen": T1}))]))
        .await
        .unwrap();
    let columns = env.columns("viewed").await;
    assert!(columns.contains(&"size".to_string()), "{columns:?}");
    assert!(columns.contains(&"first_seen".to_string()), "{columns:?}");
    let rows = env
        .admin
        .rows(&format!("SELECT id, color, size, CAST(first_seen AS VARCHAR) FROM {} ORDER BY id", env.table("viewed")))
        .await;
    assert_eq!(rows[0], vec![Some("t1".into()), Some("red".into()), None, None]);
    assert_eq!(rows[1][..3], [Some("t2".into()), Some("blue".into()), Some("42".into())]);
    assert!(rows[1][3].as_deref().unwrap().starts_with("2024-05-01"), "timestamp-looking text is a timestamp: {rows:?}");

    // A second destination (a restarted process) starts from information_schema, not from
    // memory, and still knows the column's type.
    let restarted = env.destination().await;
    restarted.deliver(&batch(2, &[track("t3", "Viewed", json!({"size": 7}))])).await.unwrap();
    assert_eq!(env.count("viewed").await, 3);
    assert!(env.columns("rudder_discards").await.is_empty(), "nothing was discarded, so no discards table");
}

/// RudderStack's warehouse layout calls the table `rudder_discards`; dbt projects written for it
/// exclude that name, so it is the default.
#[tokio::test(flavor = "multi_thread")]
async fn a_type_conflict_lands_in_rudder_discards() {
    let env = Env::new().await;
    let dest = env.destination().await;
    dest.deliver(&batch(0, &[track("t1", "Paid", json!({"amount": 5, "vip": true}))])).await.unwrap();
    let delivered = dest
        .deliver(&batch(1, &[track("t2", "Paid", json!({"amount": "lots", "vip": "yes", "note": "ok"}))]))
        .await
        .unwrap();
    assert!(delivered.rejected.is_empty(), "a misfit value does not reject its event");

    // The event still loads, without the values that do not fit.
    let rows = env
        .admin
        .rows(&format!("SELECT amount, CAST(vip AS VARCHAR), note FROM {} WHERE id = 't2'", env.table("paid")))
        .await;
    assert_eq!(rows, vec![vec![None, None, Some("ok".to_string())]]);

    let discards = env
        .admin
        .rows(&format!(
            "SELECT table_name, column_name, column_value, reason, row_id, CAST(received_at AS VARCHAR) FROM {} \
             ORDER BY column_name",
            env.table("rudder_discards")
        ))
        .await;
    assert_eq!(discards.len(), 2, "{discards:?}");
    assert_eq!(discards[0][..3], [Some("paid".into()), Some("amount".into()), Some("lots".into())]);
    assert!(discards[0][3].as_deref().unwrap().contains("NUMBER"), "{discards:?}");
    assert_eq!(discards[0][4].as_deref(), Some("t2"));
    assert!(discards[0][5].as_deref().unwrap().starts_with("2024-05-01"));
    assert_eq!(discards[1][..3], [Some("paid".into()), Some("vip".into()), Some("yes".into())]);

    // Retrying the batch does not discard twice.
    dest.deliver(&batch(1, &[track("t2", "Paid", json!({"amount": "lots", "vip": "yes", "note": "ok"}))]))
        .await
        .unwrap();
    assert_eq!(env.count("rudder_discards").await, 2);
    assert!(env.columns("discards").await.is_empty(), "nothing under the old name");
}

/// A deployment whose discards table was created as `discards` (before `rudder_discards` was the
/// default) keeps it with `discards_table: discards`; an event named like the table gets its own.
#[tokio::test(flavor = "multi_thread")]
async fn discards_table_names_the_table_misfits_go_to() {
    let env = Env::new().await;
    let mut config = env.config();
    config.discards_table = "discards".into();
    let dest = SnowflakeDestination::with_client(config, fakesnow::client(&Faults::default())).await.unwrap();
    dest.deliver(&batch(0, &[track("t1", "Paid", json!({"amount": 5}))])).await.unwrap();
    dest.deliver(&batch(1, &[track("t2", "Paid", json!({"amount": "lots"})), track("t3", "Discards", json!({"n": 1}))]))
        .await
        .unwrap();
    assert_eq!(env.count("discards").await, 1);
    assert!(env.columns("rudder_discards").await.is_empty(), "the default name is not used");
    assert_eq!(env.count("_discards").await, 1, "the event named Discards has its own table");
}

#[tokio::test(flavor = "multi_thread")]
async fn loading_the_same_batch_twice_leaves_one_row_per_id() {
    let env = Env::new().await;
    let dest = env.destination().await;
    let events: Vec<Value> = (0..50).map(|i| track(&format!("m{i}"), "Clicked", json!({"n": i}))).collect();
    let mut with_duplicate = events.clone();
    with_duplicate.push(events[3].clone()); // the same event twice in one batch
    dest.deliver(&batch(0, &with_duplicate)).await.unwrap();
    dest.deliver(&batch(0, &with_duplicate)).await.unwrap();
    // A fresh destination (no cached state at all) retrying the batch.
    env.destination().await.deliver(&batch(0, &events)).await.unwrap();
    for table in ["tracks", "clicked"] {
        assert_eq!(env.count(table).await, 50, "rows in {table}");
        let distinct = env.admin.value(&format!("SELECT COUNT(DISTINCT id) FROM {}", env.table(table))).await;
        assert_eq!(distinct.as_deref(), Some("50"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_keep_the_latest_traits() {
    let env = Env::new().await;
    let dest = env.destination().await;
    dest.deliver(&batch(0, &[identify("i1", "u1", T0, json!({"email": "old@x.com", "plan": "free"}))]))
        .await
        .unwrap();
    // In one batch: a newer plan, then a newer email.
    dest.deliver(&batch(
        1,
        &[
            identify("i2", "u1", T1, json!({"plan": "pro"})),
            identify("i3", "u1", T1, json!({"email": "new@x.com"})),
            identify("i4", "u2", T0, json!({"plan": "free"})),
        ],
    ))
    .await
    .unwrap();
    // A late, older identify: it may fill a missing trait but not overwrite newer ones.
    dest.deliver(&batch(4, &[identify("i0", "u1", "2024-04-01T00:00:00.000Z", json!({"plan": "trial", "company": "Acme"}))]))
        .await
        .unwrap();

    let users = env
        .admin
        .rows(&format!(
            "SELECT id, email, plan, company, CAST(received_at AS VARCHAR) FROM {} ORDER BY id",
            env.table("users")
        ))
        .await;
    assert_eq!(users.len(), 2, "one row per user: {users:?}");
    assert_eq!(users[0][..4], [Some("u1".into()), Some("new@x.com".into()), Some("pro".into()), Some("Acme".into())]);
    assert!(users[0][4].as_deref().unwrap().contains("11:00"), "received_at is the newest: {users:?}");
    assert_eq!(users[1][..3], [Some("u2".into()), None, Some("free".into())]);
    assert_eq!(env.count("identifies").await, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_made_by_hand_gets_the_columns_it_lacks() {
    let env = Env::new().await;
    env.admin.exec(&format!("CREATE SCHEMA {}.EVENTS", env.database)).await;
    env.admin.exec(&format!("CREATE TABLE {} (id VARCHAR, event VARCHAR)", env.table("tracks"))).await;
    env.destination().await.deliver(&batch(0, &[track("t1", "Made", json!({}))])).await.unwrap();
    let columns = env.columns("tracks").await;
    for column in ["received_at", "user_id", "event_text", "context_ip"] {
        assert!(columns.contains(&column.to_string()), "tracks lacks {column}: {columns:?}");
    }
    assert_eq!(env.admin.value(&format!("SELECT event_text FROM {}", env.table("tracks"))).await.as_deref(), Some("Made"));
}

#[tokio::test(flavor = "multi_thread")]
async fn unplaceable_events_are_rejected_and_the_rest_load() {
    let env = Env::new().await;
    let dest = env.destination().await;
    let events = [
        track("t1", "Ok", json!({})),
        json!({"type": "track", "event": "No Id"}),
        json!({"type": "teleport", "messageId": "x1"}),
    ];
    let mut b = batch(0, &events);
    b.events.push(OutEvent { offset: 9, source: Arc::from("web"), json: "not json".as_bytes().to_vec().into() });
    let delivered = dest.deliver(&b).await.unwrap();
    let rejected: Vec<usize> = delivered.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected, vec![1, 2, 3], "{:?}", delivered.rejected);
    assert!(delivered.rejected[0].1.contains("messageId"));
    assert_eq!(env.count("ok").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sql_compilation_error_is_permanent_and_names_statement_and_code() {
    let env = Env::new().await;
    // Someone replaced `tracks` with a view: no ALTER or MERGE can fix that by retrying.
    env.admin.exec(&format!("CREATE SCHEMA {}.EVENTS", env.database)).await;
    env.admin.exec(&format!("CREATE VIEW {} AS SELECT 'x' AS event", env.table("tracks"))).await;
    let dest = env.destination().await;
    let error = dest.deliver(&batch(0, &[track("t1", "Broken", json!({}))])).await.unwrap_err();
    assert!(!error.is_retriable(), "{error}");
    let reason = error.to_string();
    assert!(reason.contains("Snowflake error 0"), "carries Snowflake's error code: {reason}");
    assert!(reason.contains("statement: `ALTER TABLE"), "carries the statement: {reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unavailable_warehouse_is_temporary_and_the_retry_loads() {
    let env = Env::new().await;
    let faults = Faults::default();
    let dest = SnowflakeDestination::with_client(env.config(), fakesnow::client(&faults)).await.unwrap();
    let b = batch(0, &[track("t1", "Retried", json!({"n": 1}))]);
    dest.deliver(&b).await.unwrap();

    // The service answers 503 (an HTML page, not JSON) to the next statement.
    faults.fail_next_queries.store(1, Ordering::SeqCst);
    let error = dest.deliver(&batch(1, &[track("t2", "Retried", json!({"n": 2}))])).await.unwrap_err();
    assert!(error.is_retriable(), "{error}");
    // The router's retry of the same batch then loads it.
    dest.deliver(&batch(1, &[track("t2", "Retried", json!({"n": 2}))])).await.unwrap();
    assert_eq!(env.count("retried").await, 2);

    // Nothing listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere: reqwest::Url = format!("http://127.0.0.1:{port}").parse().unwrap();
    let dest = SnowflakeDestination::with_client(env.config(), fakesnow::client_to(nowhere, &faults)).await.unwrap();
    let error = dest.deliver(&b).await.unwrap_err();
    assert!(error.is_retriable(), "{error}");
}

/// The `sink:` blocks of the YAML examples in docs/snowflake.md, so the docs cannot drift.
fn documented_sinks() -> Vec<String> {
    let doc = std::fs::read_to_string(format!("{}/../docs/snowflake.md", std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))).unwrap();
    doc.split("```yaml\n").skip(1).map(|rest| rest.split("```").next().unwrap().to_string()).collect()
}

fn parse_sink(yaml: &str) -> Result<SinkConfig, serde_yaml::Error> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(yaml)?;
    serde_yaml::from_value(doc.get_mut("sink").expect("a sink: block").clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_yaml_parses_and_bad_settings_are_refused() {
    let examples = documented_sinks();
    assert_eq!(examples.len(), 2, "password and key-pair examples");
    for yaml in &examples {
        let sink = parse_sink(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let SinkConfig::Snowflake(config) = &sink else { panic!("not a snowflake sink") };
        sink.validate().unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("${SNOWFLAKE_PASSWORD}"), "secrets stay out of Debug output: {debug}");
    }
    assert!(examples.iter().any(|y| y.contains("type: key_pair")));
    let typo = examples[0].replace("warehouse:", "warehous:");
    assert!(parse_sink(&typo).is_err(), "unknown keys are errors");
    let bad_schema = examples[0].replace("schema: SLUICE", "schema: \"my schema\"");
    assert!(parse_sink(&bad_schema).unwrap().validate().unwrap_err().contains("schema"));

    // A key that is not a usable private key fails when the destination is built, not at the
    // first login deep in the router's retries.
    let env = Env::new().await;
    let mut config = env.config();
    config.auth = AuthConfig::KeyPair {
        private_key: Some(Secret("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into())),
        private_key_path: None,
    };
    let error = SnowflakeDestination::with_client(config, fakesnow::client(&Faults::default())).await.err().unwrap();
    assert!(error.to_string().contains("private key"), "{error}");
}

/// The upload half of an external S3 stage, against moto: what COPY would read from
/// `s3://{bucket}/{prefix}/` (fakesnow itself cannot read S3, so COPY is exercised with the
/// file stage above).
#[tokio::test(flavor = "multi_thread")]
async fn the_s3_stage_uploads_and_removes_batch_files() {
    use sluice_destinations::snowflake::stage::{self, FileStore, StagedFile};
    use std::io::Read;

    let endpoint = moto::endpoint();
    let bucket = fakesnow::unique("stage").to_lowercase().replace('_', "-");
    let config = StageConfig::S3 {
        name: "SLUICE_STAGE".into(),
        bucket: bucket.clone(),
        prefix: "/snowflake/".into(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.clone()),
        storage_integration: Some("S3_INT".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some(Secret("test".into())),
    };
    assert_eq!(
        stage::create_sql(&config, "\"DB\".\"S\".\"SLUICE_STAGE\"").unwrap(),
        format!("CREATE STAGE IF NOT EXISTS \"DB\".\"S\".\"SLUICE_STAGE\" URL = 's3://{bucket}/snowflake/' STORAGE_INTEGRATION = \"S3_INT\"")
    );

    let s3 = moto::client(&endpoint);
    s3.create_bucket().bucket(&bucket).send().await.unwrap();

    let timeout = std::time::Duration::from_secs(30);
    let store = FileStore::open(&config, timeout).await.unwrap().expect("an s3 stage has a file store");
    let gz = |text: &str| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let dir = "warehouse/tracks/00000000000000000000-00000000000000000009-abc";
    let files = vec![
        StagedFile { name: "part-00000.ndjson.gz".into(), bytes: gz("{\"id\":\"a\"}\n") },
        StagedFile { name: "part-00001.ndjson.gz".into(), bytes: gz("{\"id\":\"b\"}\n") },
    ];
    store.upload(dir, files).await.unwrap();

    let listed = s3.list_objects_v2().bucket(&bucket).prefix("snowflake/").send().await.unwrap();
    let keys: Vec<String> = listed.contents().iter().filter_map(|o| o.key().map(str::to_string)).collect();
    assert_eq!(keys, vec![format!("snowflake/{dir}/part-00000.ndjson.gz"), format!("snowflake/{dir}/part-00001.ndjson.gz")]);
    let body = s3.get_object().bucket(&bucket).key(&keys[1]).send().await.unwrap().body.collect().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body.into_bytes()[..]).read_to_string(&mut text).unwrap();
    assert_eq!(text, "{\"id\":\"b\"}\n");

    store.remove(dir, &["part-00000.ndjson.gz".into(), "part-00001.ndjson.gz".into()]).await.unwrap();
    let listed = s3.list_objects_v2().bucket(&bucket).send().await.unwrap();
    assert!(listed.contents().is_empty(), "staged objects are removed after the load");

    // A missing bucket is a configuration problem, not something a retry fixes.
    let mut missing = config.clone();
    if let StageConfig::S3 { bucket, .. } = &mut missing {
        *bucket = format!("{bucket}-missing");
    }
    let store = FileStore::open(&missing, timeout).await.unwrap().unwrap();
    let error = store.upload(dir, vec![StagedFile { name: "x.gz".into(), bytes: vec![1] }]).await.unwrap_err();
    assert!(!error.is_retriable(), "{error}");
}

/// `landed_ids` (what `sluice reconcile` reads) finds every event once, although a track also has
/// a row in its event's own table.
#[tokio::test(flavor = "multi_thread")]
async fn landed_ids_reads_each_event_once() {
    let env = Env::new().await;
    let dest = env.destination().await;
    assert!(dest.landed_ids().await.unwrap().is_empty(), "no tables yet");
    let events = [
        track("6f1c0d3e-5a8b-4c3e-9d2f-0b7e8a9c1d2e", "Post Created", json!({"length": 3})),
        track("t2", "Post Created", json!({"length": 4})),
        identify("i1", "u1", T0, json!({"email": "a@example.com"})),
        json!({"type": "page", "messageId": "p1", "anonymousId": "anon-1", "name": "Home", "receivedAt": T0}),
    ];
    dest.deliver(&batch(0, &events)).await.unwrap();
    let landed = dest.landed_ids().await.unwrap();
    let mut others = landed.others.clone();
    others.sort();
    assert_eq!(others, vec!["i1", "p1", "t2"]);
    assert_eq!(landed.uuids.len(), 1);
}
