//! The S3 destination against moto (`scripts/backends.sh start`), one fresh bucket per test.

#[path = "support/moto.rs"]
mod moto;

use std::io::Read;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use rand::distr::Alphanumeric;
use rand::Rng;
use serde_json::{json, Value};
use sluice_destinations::s3::{S3Config, S3Destination, S3Format};
use sluice_destinations::{Batch, Destination, OutEvent, SinkConfig};

use moto::{endpoint, fresh_bucket};

const MIB: u64 = 1024 * 1024;
const RECEIVED_AT: &str = "2026-11-22T10:15:30.250Z";

fn config(endpoint: &str, bucket: &str, format: S3Format) -> S3Config {
    S3Config { format, ..moto::sink_config(endpoint, bucket) }
}

fn event(offset: u64, source: &str, extra: Value) -> OutEvent {
    let mut json = json!({
        "messageId": format!("m{offset}"),
        "type": "track",
        "event": "Message Sent",
        "userId": format!("u{}", offset % 3),
        "anonymousId": "anon-1",
        "receivedAt": RECEIVED_AT,
        "sentAt": "2026-11-22T10:15:29.900Z",
        "timestamp": "2026-11-22T10:15:30.001Z",
        "originalTimestamp": "2026-11-22T10:15:29.651Z",
        "context": {"library": {"name": "chat-core"}, "ip": "10.0.0.1"},
        "properties": {"channel_id": "c1", "length": offset},
    });
    json.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
    OutEvent { offset, source: Arc::from(source), json: json.to_string().into() }
}

fn batch(events: Vec<OutEvent>) -> Batch {
    Batch { destination: Arc::from("lake"), partition: None, events }
}

async fn keys(client: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let listed = client.list_objects_v2().bucket(bucket).send().await.unwrap();
    listed.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect()
}

async fn get(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Bytes {
    let object = client.get_object().bucket(bucket).key(key).send().await.unwrap();
    object.body.collect().await.unwrap().into_bytes()
}

fn gunzip_lines(bytes: &[u8]) -> Vec<String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).unwrap();
    assert!(text.ends_with('\n'), "every line ends with a newline");
    text.lines().map(str::to_owned).collect()
}

fn as_strings(events: &[OutEvent]) -> Vec<String> {
    events.iter().map(|e| String::from_utf8(e.json.to_vec()).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_gzip_objects_hold_exactly_the_events_under_the_expected_key() {
    let (client, endpoint, bucket) = fresh_bucket("ndjson").await;
    let dest = S3Destination::new(config(&endpoint, &bucket, S3Format::NdjsonGzip)).await.unwrap();
    let b = batch((5..=7).map(|o| event(o, "chat", json!({}))).collect());
    let delivered = dest.deliver(&b).await.unwrap();
    assert!(delivered.rejected.is_empty());
    let key = "events/raw/chat/2026/11/22/10/00000000000000000005-00000000000000000007.ndjson.gz";
    assert_eq!(keys(&client, &bucket).await, vec![key.to_owned()]);
    let head = client.head_object().bucket(&bucket).key(key).send().await.unwrap();
    assert_eq!(head.content_type(), Some("application/gzip"));
    assert_eq!(head.content_encoding(), None, "stored as a .gz file, not transparently compressed");
    assert_eq!(head.metadata().unwrap().get("sluice-events").map(String::as_str), Some("3"));
    assert_eq!(gunzip_lines(&get(&client, &bucket, key).await), as_strings(&b.events));
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> &'a T {
    batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}")).as_any().downcast_ref::<T>().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_object_reads_back_with_the_expected_schema_and_values() {
    let (client, endpoint, bucket) = fresh_bucket("parquet").await;
    let dest = S3Destination::new(config(&endpoint, &bucket, S3Format::Parquet)).await.unwrap();
    let events = vec![
        event(1, "chat", json!({"channel": "server"})),
        event(2, "chat", json!({"type": "identify", "event": null, "traits": {"plan": "pro"}, "userId": 42})),
    ];
    let before = chrono::Utc::now();
    dest.deliver(&batch(events)).await.unwrap();
    let key = "events/raw/chat/2026/11/22/10/00000000000000000001-00000000000000000002.parquet";
    assert_eq!(keys(&client, &bucket).await, vec![key.to_owned()]);

    let bytes = get(&client, &bucket, key).await;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap();
    let schema = reader.schema().clone();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "id", "type", "event", "name", "user_id", "anonymous_id", "group_id", "previous_id", "received_at",
            "sent_at", "timestamp", "original_timestamp", "context", "properties", "traits", "source", "uuid_ts",
            "extra"
        ]
    );
    let utc_micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    for name in ["received_at", "sent_at", "timestamp", "original_timestamp", "uuid_ts"] {
        assert_eq!(schema.field_with_name(name).unwrap().data_type(), &utc_micros, "{name}");
    }
    let rows: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    let rows = &rows[0];
    assert_eq!(rows.num_rows(), 2);

    let strings = |name| column::<StringArray>(rows, name);
    assert_eq!(strings("id").value(0), "m1");
    assert_eq!(strings("id").value(1), "m2");
    assert_eq!(strings("type").value(1), "identify");
    assert_eq!(strings("event").value(0), "Message Sent");
    assert!(strings("event").is_null(1));
    assert_eq!(strings("user_id").value(0), "u1");
    assert_eq!(strings("user_id").value(1), "42", "numeric ids become text");
    assert_eq!(strings("anonymous_id").value(0), "anon-1");
    assert_eq!(strings("source").value(0), "chat");
    assert!(strings("name").is_null(0));
    let context: Value = serde_json::from_str(strings("context").value(0)).unwrap();
    assert_eq!(context, json!({"library": {"name": "chat-core"}, "ip": "10.0.0.1"}));
    let properties: Value = serde_json::from_str(strings("properties").value(1)).unwrap();
    assert_eq!(properties, json!({"channel_id": "c1", "length": 2}));
    assert!(strings("traits").is_null(0));
    assert_eq!(serde_json::from_str::<Value>(strings("traits").value(1)).unwrap(), json!({"plan": "pro"}));
    assert_eq!(serde_json::from_str::<Value>(strings("extra").value(0)).unwrap(), json!({"channel": "server"}));
    assert!(strings("extra").is_null(1));

    let micros = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
    let times = |name| column::<TimestampMicrosecondArray>(rows, name);
    assert_eq!(times("received_at").value(0), micros(RECEIVED_AT));
    assert_eq!(times("sent_at").value(1), micros("2026-11-22T10:15:29.900Z"));
    assert_eq!(times("timestamp").value(0), micros("2026-11-22T10:15:30.001Z"));
    assert_eq!(times("original_timestamp").value(0), micros("2026-11-22T10:15:29.651Z"));
    let loaded = times("uuid_ts").value(0);
    assert!(loaded >= before.timestamp_micros() && loaded <= chrono::Utc::now().timestamp_micros());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_batch_overwrites_its_object() {
    let (client, endpoint, bucket) = fresh_bucket("retry").await;
    let dest = S3Destination::new(config(&endpoint, &bucket, S3Format::NdjsonGzip)).await.unwrap();
    let b = batch((100..110).map(|o| event(o, "chat", json!({}))).collect());
    dest.deliver(&b).await.unwrap();
    let first = keys(&client, &bucket).await;
    dest.deliver(&b).await.unwrap();
    assert_eq!(keys(&client, &bucket).await, first, "the retry wrote the same key, no second object");
    assert_eq!(first.len(), 1);
    assert_eq!(gunzip_lines(&get(&client, &bucket, &first[0]).await), as_strings(&b.events));
}

#[tokio::test(flavor = "multi_thread")]
async fn events_from_two_sources_become_two_objects() {
    let (client, endpoint, bucket) = fresh_bucket("sources").await;
    let mut c = config(&endpoint, &bucket, S3Format::NdjsonGzip);
    c.prefix = String::new();
    let dest = S3Destination::new(c).await.unwrap();
    let b = batch(vec![
        event(1, "web", json!({})),
        event(2, "chat", json!({})),
        event(3, "web", json!({})),
        event(4, "chat", json!({})),
        event(5, "chat", json!({})),
    ]);
    dest.deliver(&b).await.unwrap();
    let mut found = keys(&client, &bucket).await;
    found.sort();
    assert_eq!(
        found,
        [
            "chat/2026/11/22/10/00000000000000000002-00000000000000000005.ndjson.gz",
            "web/2026/11/22/10/00000000000000000001-00000000000000000003.ndjson.gz"
        ]
    );
    let chat = gunzip_lines(&get(&client, &bucket, &found[0]).await);
    assert_eq!(chat, as_strings(&[b.events[1].clone(), b.events[3].clone(), b.events[4].clone()]));
    let web = gunzip_lines(&get(&client, &bucket, &found[1]).await);
    assert_eq!(web, as_strings(&[b.events[0].clone(), b.events[2].clone()]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_over_the_threshold_goes_up_in_parts_and_arrives_complete() {
    let (client, endpoint, bucket) = fresh_bucket("multipart").await;
    let mut c = config(&endpoint, &bucket, S3Format::NdjsonGzip);
    c.multipart_threshold_bytes = 5 * MIB;
    c.part_size_bytes = 5 * MIB;
    let dest = S3Destination::new(c).await.unwrap();
    // Random text barely compresses, so ~9 MB of events stay over 5 MiB gzipped: two parts.
    let mut rng = rand::rng();
    let events: Vec<OutEvent> = (0..900)
        .map(|o| {
            let noise: String = (&mut rng).sample_iter(Alphanumeric).take(10_000).map(char::from).collect();
            event(o, "chat", json!({"properties": {"noise": noise}}))
        })
        .collect();
    let b = batch(events);
    dest.deliver(&b).await.unwrap();

    let found = keys(&client, &bucket).await;
    assert_eq!(found.len(), 1);
    let head = client.head_object().bucket(&bucket).key(&found[0]).send().await.unwrap();
    let size = head.content_length().unwrap() as u64;
    assert!(size > 5 * MIB && size < 10 * MIB, "object of {size} bytes should span two 5 MiB parts");
    // S3 (and moto) give a multipart object an ETag ending in "-{number of parts}".
    assert!(head.e_tag().unwrap().trim_matches('"').ends_with("-2"), "ETag {:?}", head.e_tag());
    assert_eq!(gunzip_lines(&get(&client, &bucket, &found[0]).await), as_strings(&b.events));
    let open = client.list_multipart_uploads().bucket(&bucket).send().await.unwrap();
    assert!(open.uploads().is_empty(), "no multipart upload left open");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_a_permanent_error() {
    let endpoint = endpoint();
    let dest = S3Destination::new(config(&endpoint, "sluice-no-such-bucket-3b7f", S3Format::NdjsonGzip)).await.unwrap();
    let error = dest.deliver(&batch(vec![event(1, "chat", json!({}))])).await.unwrap_err();
    assert!(!error.is_retriable(), "{error}");
    assert!(error.to_string().contains("NoSuchBucket"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_a_temporary_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut c = config(&format!("http://127.0.0.1:{port}"), "any-bucket", S3Format::NdjsonGzip);
    c.timeout_ms = 5_000;
    let dest = S3Destination::new(c).await.unwrap();
    let error = dest.deliver(&batch(vec![event(1, "chat", json!({}))])).await.unwrap_err();
    assert!(error.is_retriable(), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sink_config_builds_s3_from_its_type_tag_and_checks_it() {
    let (client, endpoint, bucket) = fresh_bucket("sinkconfig").await;
    let sink: SinkConfig = serde_json::from_value(json!({
        "type": "s3", "bucket": bucket, "prefix": "p", "endpoint": endpoint, "force_path_style": true,
        "region": "us-east-1", "access_key_id": "test", "secret_access_key": "test", "format": "parquet"
    }))
    .unwrap();
    sink.validate().unwrap();
    sink.build().await.unwrap().deliver(&batch(vec![event(9, "chat", json!({}))])).await.unwrap();
    assert_eq!(
        keys(&client, &bucket).await,
        ["p/chat/2026/11/22/10/00000000000000000009-00000000000000000009.parquet"]
    );
    let bad: SinkConfig =
        serde_json::from_value(json!({"type": "s3", "bucket": "b", "access_key_id": "only-the-key"})).unwrap();
    assert!(bad.validate().unwrap_err().contains("secret_access_key"));
    let small_parts: SinkConfig =
        serde_json::from_value(json!({"type": "s3", "bucket": "b", "part_size_bytes": 1024})).unwrap();
    assert!(small_parts.validate().unwrap_err().contains("part_size_bytes"));
    let level = |v: Value| serde_json::from_value::<SinkConfig>(v).unwrap().validate();
    assert!(level(json!({"type": "s3", "bucket": "b", "gzip_level": 10})).unwrap_err().contains("gzip_level must be 0..=9"));
    assert!(level(json!({"type": "s3", "bucket": "b", "gzip_level": 1, "format": "parquet"})).unwrap_err().contains("snappy"));
    level(json!({"type": "s3", "bucket": "b", "gzip_level": 0})).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip_level_trades_object_size_for_cpu_and_keeps_every_line() {
    let (client, endpoint, bucket) = fresh_bucket("gziplevel").await;
    let mut sizes = Vec::new();
    for (i, level) in [0u32, 1, 9].into_iter().enumerate() {
        let dest = S3Destination::new(S3Config {
            gzip_level: Some(level),
            prefix: format!("level{level}"),
            ..config(&endpoint, &bucket, S3Format::NdjsonGzip)
        })
        .await
        .unwrap();
        let b = batch((0..500).map(|o| event(o + 1000 * i as u64, "chat", json!({"text": "the same words again and again"}))).collect());
        dest.deliver(&b).await.unwrap();
        let key = keys(&client, &bucket).await.into_iter().find(|k| k.starts_with(&format!("level{level}/"))).unwrap();
        let body = get(&client, &bucket, &key).await;
        assert_eq!(gunzip_lines(&body), as_strings(&b.events), "level {level}");
        sizes.push(body.len());
    }
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2], "level 0 stores, 9 is smallest: {sizes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_rejects_events_that_are_not_objects_and_writes_the_rest() {
    let (client, endpoint, bucket) = fresh_bucket("rejects").await;
    let dest = S3Destination::new(config(&endpoint, &bucket, S3Format::Parquet)).await.unwrap();
    let not_an_object = OutEvent { offset: 2, source: Arc::from("chat"), json: Bytes::from_static(b"[1,2,3]") };
    let b = batch(vec![event(1, "web", json!({})), not_an_object, event(3, "chat", json!({})), event(4, "web", json!({}))]);
    let delivered = dest.deliver(&b).await.unwrap();
    // The index is the event's place in the whole batch, not in its source's object.
    assert_eq!(delivered.rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
    assert!(delivered.rejected[0].1.contains("not a JSON object"), "{}", delivered.rejected[0].1);
    let mut found = keys(&client, &bucket).await;
    found.sort();
    assert_eq!(found.len(), 2, "{found:?}");
    for (key, rows) in found.iter().zip([1, 2]) {
        let bytes = get(&client, &bucket, key).await;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        assert_eq!(reader.map(|b| b.unwrap().num_rows()).sum::<usize>(), rows, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_received_at_the_object_is_filed_under_the_delivery_hour() {
    let (client, endpoint, bucket) = fresh_bucket("nodate").await;
    let dest = S3Destination::new(config(&endpoint, &bucket, S3Format::NdjsonGzip)).await.unwrap();
    let mut e = event(1, "chat", json!({}));
    let mut value: Value = serde_json::from_slice(&e.json).unwrap();
    value.as_object_mut().unwrap().remove("receivedAt");
    e.json = value.to_string().into();
    let hour = |t: chrono::DateTime<chrono::Utc>| t.format("events/raw/chat/%Y/%m/%d/%H/").to_string();
    let before = hour(chrono::Utc::now());
    dest.deliver(&batch(vec![e])).await.unwrap();
    let after = hour(chrono::Utc::now());
    let found = keys(&client, &bucket).await;
    assert!(found[0].starts_with(&before) || found[0].starts_with(&after), "{found:?} vs {before}");
}

/// `landed_ids` (what `sluice reconcile` reads) finds every event of both formats, under the
/// prefix only, and counts a repeated event as a repeat.
#[tokio::test(flavor = "multi_thread")]
async fn landed_ids_reads_back_every_event_of_both_formats() {
    let (client, endpoint, bucket) = fresh_bucket("landed_ids").await;
    let ndjson = S3Destination::new(config(&endpoint, &bucket, S3Format::NdjsonGzip)).await.unwrap();
    ndjson.deliver(&batch((0..5).map(|o| event(o, "web", json!({}))).collect())).await.unwrap();
    let mut parquet_config = config(&endpoint, &bucket, S3Format::Parquet);
    parquet_config.prefix = "events/raw/pq".into();
    let parquet = S3Destination::new(parquet_config.clone()).await.unwrap();
    parquet.deliver(&batch((4..9).map(|o| event(o, "web", json!({}))).collect())).await.unwrap();
    client.put_object().bucket(&bucket).key("elsewhere/x.ndjson.gz").body(Vec::new().into()).send().await.unwrap();

    let landed = sluice_destinations::s3::landed_ids(&config(&endpoint, &bucket, S3Format::NdjsonGzip)).await.unwrap();
    let mut ids = landed.others.clone();
    ids.sort();
    let mut expected: Vec<String> = (0..9).chain([4]).map(|o| format!("m{o}")).collect();
    expected.sort();
    assert_eq!(ids, expected, "m4 was written twice");
    assert_eq!((landed.objects, landed.without_id), (2, 0));
    let only_parquet = sluice_destinations::s3::landed_ids(&parquet_config).await.unwrap();
    assert_eq!(only_parquet.others.len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_batch_writes_what_deliver_writes_and_a_retry_writes_it_again() {
    let (client, endpoint, bucket) = fresh_bucket("prepared").await;
    let (_, _, plain_bucket) = fresh_bucket("unprepared").await;
    let prepared_dest = S3Destination::new(config(&endpoint, &bucket, S3Format::Parquet)).await.unwrap();
    let plain_dest = S3Destination::new(config(&endpoint, &plain_bucket, S3Format::Parquet)).await.unwrap();
    let not_an_object = OutEvent { offset: 2, source: Arc::from("chat"), json: Bytes::from_static(b"\"text\"") };
    let b = batch(vec![event(1, "web", json!({})), not_an_object, event(3, "chat", json!({})), event(4, "web", json!({}))]);

    let prepared = prepared_dest.prepare(&b).await.expect("the S3 sink prepares its objects");
    let first = prepared_dest.deliver_prepared(&b, &prepared).await.unwrap();
    let written = keys(&client, &bucket).await;
    // A retry of the same batch uploads the same objects again (same keys, no new object).
    let again = prepared_dest.deliver_prepared(&b, &prepared).await.unwrap();
    assert_eq!(keys(&client, &bucket).await, written);
    let plain = plain_dest.deliver(&b).await.unwrap();

    let rejected = |d: &sluice_destinations::Delivered| d.rejected.iter().map(|(i, _)| *i).collect::<Vec<_>>();
    assert_eq!((rejected(&first), rejected(&again), rejected(&plain)), (vec![1], vec![1], vec![1]));
    assert_eq!(written, keys(&client, &plain_bucket).await, "the same keys as an unprepared delivery");
    assert_eq!(written.len(), 2);
    for key in &written {
        let ids = |bytes: Bytes| -> Vec<String> {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
            reader
                .flat_map(|b| {
                    let b = b.unwrap();
                    let ids = column::<StringArray>(&b, "id");
                    (0..ids.len()).map(|i| ids.value(i).to_string()).collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(ids(get(&client, &bucket, key).await), ids(get(&client, &plain_bucket, key).await), "{key}");
    }
}
