//! Turning the events of one object into bytes: gzip NDJSON or Parquet.
//!
//! # Parquet columns
//! One row per event, Snappy-compressed, in the warehouse shape of the architecture note so the
//! files load into a `tracks`-like table or query directly from Athena, Spark or DuckDB:
//!
//! | column | type | from |
//! |---|---|---|
//! | `id` | string | `messageId` |
//! | `type`, `event`, `name` | string | `type`, `event` (track), `name` (page/screen) |
//! | `user_id`, `anonymous_id`, `group_id`, `previous_id` | string | `userId`, `anonymousId`, `groupId`, `previousId` |
//! | `received_at`, `sent_at`, `timestamp`, `original_timestamp` | timestamp (µs, UTC) | `receivedAt`, `sentAt`, `timestamp`, `originalTimestamp` |
//! | `context`, `properties`, `traits` | string (JSON) | the objects, serialized |
//! | `source` | string | the source id from the config |
//! | `uuid_ts` | timestamp (µs, UTC) | when the file was written (the warehouse load time) |
//! | `extra` | string (JSON) | every other top-level field (`channel`, `integrations`, custom ones), or null |
//!
//! Timestamps are a real Parquet timestamp type, not strings, so engines can filter and partition
//! on them without casts. A timestamp that is not RFC 3339 becomes null in its column and keeps its
//! original value in `extra` under its original name, so nothing the client sent is lost. Ids that
//! arrive as numbers (some SDKs send numeric `userId`) are written as their JSON text.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression as ParquetCompression;
use parquet::file::properties::WriterProperties;
use std::borrow::Cow;


use super::members::Member;
use super::S3Format;
use crate::{DeliveryError, OutEvent};

/// An encoded object and the events left out of it.
pub struct Encoded {
    pub bytes: Bytes,
    /// Events that could not be encoded (index into the input, reason).
    pub rejected: Vec<(usize, String)>,
}

pub use crate::DEFAULT_GZIP_LEVEL;

/// Encodes `events` in `format` (`gzip_level` for `ndjson_gzip`); `loaded_at` fills Parquet's
/// `uuid_ts`.
pub fn encode(format: S3Format, gzip_level: u32, events: &[OutEvent], loaded_at: DateTime<Utc>) -> Result<Encoded, DeliveryError> {
    match format {
        S3Format::NdjsonGzip => Ok(Encoded { bytes: ndjson_gzip(events, gzip_level)?, rejected: Vec::new() }),
        S3Format::Parquet => parquet(events, loaded_at),
    }
}

pub use crate::received_at;

fn ndjson_gzip(events: &[OutEvent], level: u32) -> Result<Bytes, DeliveryError> {
    let size: usize = events.iter().map(|e| e.json.len() + 1).sum();
    let mut gz = GzEncoder::new(Vec::with_capacity(size / 4), Compression::new(level));
    for event in events {
        gz.write_all(&event.json)?;
        gz.write_all(b"\n")?;
    }
    Ok(gz.finish()?.into())
}

/// String columns copied from a top-level field: (column, field).
const STRING_COLUMNS: [(&str, &str); 8] = [
    ("id", "messageId"),
    ("type", "type"),
    ("event", "event"),
    ("name", "name"),
    ("user_id", "userId"),
    ("anonymous_id", "anonymousId"),
    ("group_id", "groupId"),
    ("previous_id", "previousId"),
];
/// Timestamp columns parsed from an RFC 3339 top-level field: (column, field).
const TIMESTAMP_COLUMNS: [(&str, &str); 4] = [
    ("received_at", "receivedAt"),
    ("sent_at", "sentAt"),
    ("timestamp", "timestamp"),
    ("original_timestamp", "originalTimestamp"),
];
/// Object fields kept as JSON text: (column, field).
const JSON_COLUMNS: [(&str, &str); 3] = [("context", "context"), ("properties", "properties"), ("traits", "traits")];

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow schema of the Parquet files, in column order.
pub fn parquet_schema() -> Schema {
    let mut fields = Vec::new();
    fields.extend(STRING_COLUMNS.iter().map(|(c, _)| Field::new(*c, DataType::Utf8, true)));
    fields.extend(TIMESTAMP_COLUMNS.iter().map(|(c, _)| Field::new(*c, utc_micros(), true)));
    fields.extend(JSON_COLUMNS.iter().map(|(c, _)| Field::new(*c, DataType::Utf8, true)));
    fields.push(Field::new("source", DataType::Utf8, false));
    fields.push(Field::new("uuid_ts", utc_micros(), false));
    fields.push(Field::new("extra", DataType::Utf8, true));
    Schema::new(fields)
}

fn parquet(events: &[OutEvent], loaded_at: DateTime<Utc>) -> Result<Encoded, DeliveryError> {
    let rows = events.len();
    let mut strings: Vec<StringBuilder> = STRING_COLUMNS.iter().map(|_| StringBuilder::with_capacity(rows, rows * 24)).collect();
    let mut times: Vec<TimestampMicrosecondBuilder> =
        TIMESTAMP_COLUMNS.iter().map(|_| TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")).collect();
    let mut jsons: Vec<StringBuilder> = JSON_COLUMNS.iter().map(|_| StringBuilder::with_capacity(rows, rows * 256)).collect();
    let mut source = StringBuilder::with_capacity(rows, rows * 8);
    let mut uuid_ts = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut extra = StringBuilder::with_capacity(rows, rows * 32);
    let mut rejected = Vec::new();

    for (i, event) in events.iter().enumerate() {
        // Borrowed raw values, not a `Value` tree: the JSON columns are the stored text as it is,
        // so nothing is built only to be serialized again (this was most of the encoding time).
        // Each top-level member goes straight to its column's slot; the map this used to build
        // and take apart (a `BTreeMap` insert and remove per field) was 5% of a drain's CPU.
        let members = match super::members::members(&event.json) {
            Ok(members) => members,
            Err(e) => {
                rejected.push((i, format!("event is not a JSON object, cannot write it as Parquet: {e}")));
                continue;
            }
        };
        let mut slots: [Option<&str>; COLUMN_FIELDS] = [None; COLUMN_FIELDS];
        let mut rest: Vec<Member<'_>> = Vec::new();
        for (key, raw) in members {
            match column_of(&key) {
                // A repeated key keeps its last value, as a map would.
                Some(slot) => slots[slot] = Some(raw),
                None => match rest.iter_mut().find(|(k, _)| *k == key) {
                    Some(kept) => kept.1 = raw,
                    None => rest.push((key, raw)),
                },
            }
        }
        let (string_slots, others) = slots.split_at(STRING_COLUMNS.len());
        let (time_slots, json_slots) = others.split_at(TIMESTAMP_COLUMNS.len());
        for (slot, column) in string_slots.iter().zip(&mut strings) {
            match slot.map(text_of) {
                None | Some(Text::Null) => column.append_null(),
                Some(Text::Str(s)) => column.append_value(s),
                Some(Text::Other(raw)) => column.append_value(raw),
            }
        }
        // Unparsable timestamps go to `extra` under their own names.
        for ((slot, (_, field)), column) in time_slots.iter().zip(&TIMESTAMP_COLUMNS).zip(&mut times) {
            let Some(raw) = slot else {
                column.append_null();
                continue;
            };
            let parsed = match text_of(raw) {
                Text::Null => {
                    column.append_null();
                    continue;
                }
                Text::Str(s) => DateTime::parse_from_rfc3339(&s).ok(),
                Text::Other(_) => None,
            };
            match parsed {
                Some(t) => column.append_value(t.timestamp_micros()),
                None => {
                    column.append_null();
                    rest.push((Cow::Borrowed(*field), raw));
                }
            }
        }
        for (slot, column) in json_slots.iter().zip(&mut jsons) {
            match slot {
                Some(raw) if *raw != "null" => column.append_value(raw),
                _ => column.append_null(),
            }
        }
        source.append_value(&event.source);
        uuid_ts.append_value(loaded_at.timestamp_micros());
        if rest.is_empty() {
            extra.append_null();
        } else {
            rest.sort_by(|a, b| a.0.cmp(&b.0));
            extra.append_value(object_text(&rest));
        }
    }

    let mut columns: Vec<ArrayRef> = Vec::new();
    columns.extend(strings.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(times.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.extend(jsons.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    columns.push(Arc::new(source.finish()));
    columns.push(Arc::new(uuid_ts.finish()));
    columns.push(Arc::new(extra.finish()));
    let schema = Arc::new(parquet_schema());
    // These fail only on a mismatch between the schema and the builders above: a bug, not data.
    let record_batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| DeliveryError::permanent(format!("building the Parquet row batch failed: {e}")))?;
    let properties = WriterProperties::builder().set_compression(ParquetCompression::SNAPPY).build();
    let mut out = Vec::with_capacity(events.iter().map(|e| e.json.len()).sum::<usize>() / 4);
    let mut writer = ArrowWriter::try_new(&mut out, schema, Some(properties))
        .map_err(|e| DeliveryError::permanent(format!("creating the Parquet writer failed: {e}")))?;
    writer
        .write(&record_batch)
        .and_then(|_| writer.close().map(|_| ()))
        .map_err(|e| DeliveryError::permanent(format!("writing Parquet failed: {e}")))?;
    Ok(Encoded { bytes: out.into(), rejected })
}

/// A top-level value as a string column sees it.
enum Text<'a> {
    Null,
    /// A JSON string, unescaped.
    Str(Cow<'a, str>),
    /// Any other value (ids sent as numbers), as its JSON text.
    Other(&'a str),
}

fn text_of(raw: &str) -> Text<'_> {
    match raw.as_bytes().first() {
        Some(b'"') => match serde_json::from_str::<Key>(raw) {
            Ok(Key(s)) => Text::Str(s),
            Err(_) => Text::Other(raw),
        },
        _ if raw == "null" => Text::Null,
        _ => Text::Other(raw),
    }
}

/// Top-level fields that have a column, in column order: strings, timestamps, JSON objects.
const COLUMN_FIELDS: usize = STRING_COLUMNS.len() + TIMESTAMP_COLUMNS.len() + JSON_COLUMNS.len();

fn column_of(field: &str) -> Option<usize> {
    let fields = STRING_COLUMNS.iter().chain(&TIMESTAMP_COLUMNS).chain(&JSON_COLUMNS);
    fields.map(|(_, f)| *f).position(|f| f == field)
}

/// A key borrowed from the input when it has no escapes (serde's own `Cow<str>` always copies).
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        deserializer.deserialize_str(Visit)
    }
}

/// The remaining fields as one JSON object, keys sorted.
fn object_text(object: &[Member<'_>]) -> String {
    let mut out = String::with_capacity(2 + object.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>());
    out.push('{');
    for (n, (key, value)) in object.iter().enumerate() {
        if n > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(key).expect("a string serializes"));
        out.push(':');
        out.push_str(value);
    }
    out.push('}');
    out
}

/// The `messageId`s of one object this sink wrote (the `id` column of a Parquet object).
pub fn read_ids(key: &str, body: Bytes) -> Result<crate::LandedIds, DeliveryError> {
    use arrow::array::{Array, StringArray};
    let mut ids = crate::LandedIds { objects: 1, ..Default::default() };
    if key.ends_with(".parquet") {
        let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(body)
            .map_err(|e| DeliveryError::Config(format!("{key}: not Parquet: {e}")))?;
        let column = builder.schema().index_of("id").map_err(|e| DeliveryError::Config(format!("{key}: {e}")))?;
        let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), [column]);
        let reader = builder.with_projection(mask).build().map_err(|e| DeliveryError::Config(format!("{key}: {e}")))?;
        for batch in reader {
            let batch = batch.map_err(|e| DeliveryError::Config(format!("{key}: {e}")))?;
            let Some(array) = batch.column(0).as_any().downcast_ref::<StringArray>() else {
                return Err(DeliveryError::Config(format!("{key}: the id column is not text")));
            };
            for i in 0..array.len() {
                if array.is_null(i) {
                    ids.without_id += 1;
                } else {
                    ids.push(array.value(i));
                }
            }
        }
    } else {
        let mut text = Vec::with_capacity(body.len() * 4);
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&body[..]), &mut text)
            .map_err(|e| DeliveryError::Config(format!("{key}: not gzip: {e}")))?;
        ids.push_ndjson(&text);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn event(offset: u64, json: &str) -> OutEvent {
        OutEvent { offset, source: Arc::from("chat"), json: Bytes::copy_from_slice(json.as_bytes()) }
    }

    fn read(bytes: Bytes) -> RecordBatch {
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        reader.next().unwrap().unwrap()
    }

    fn strings<'a>(batch: &'a RecordBatch, name: &str) -> &'a StringArray {
        batch.column_by_name(name).unwrap().as_any().downcast_ref::<StringArray>().unwrap()
    }

    #[test]
    fn parquet_keeps_bad_timestamps_and_unknown_fields_in_extra_and_rejects_non_objects() {
        let events = [
            event(1, r#"{"messageId":"m1","type":"identify","userId":42,"timestamp":"yesterday","channel":"web"}"#),
            event(2, r#"[1,2]"#),
            event(3, r#"{"messageId":"m3","type":"track","event":"Sent","sentAt":"2026-01-02T03:04:05.123456Z"}"#),
        ];
        let encoded = encode(S3Format::Parquet, DEFAULT_GZIP_LEVEL, &events, Utc::now()).unwrap();
        assert_eq!(encoded.rejected.len(), 1);
        assert_eq!(encoded.rejected[0].0, 1);
        let batch = read(encoded.bytes);
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(strings(&batch, "user_id").value(0), "42");
        let extra: serde_json::Value = serde_json::from_str(strings(&batch, "extra").value(0)).unwrap();
        assert_eq!(extra, serde_json::json!({"timestamp": "yesterday", "channel": "web"}));
        assert!(strings(&batch, "extra").is_null(1));
        let sent = batch.column_by_name("sent_at").unwrap().as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert!(sent.is_null(0));
        let expected = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z").unwrap().timestamp_micros();
        assert_eq!(sent.value(1), expected);
    }

    #[test]
    fn received_at_reads_only_a_valid_field() {
        let t = received_at(br#"{"receivedAt":"2026-03-04T05:06:07Z","x":{"y":1}}"#).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-04T05:06:07+00:00");
        assert!(received_at(br#"{"receivedAt":"later"}"#).is_none());
        assert!(received_at(br#"{"messageId":"m"}"#).is_none());
    }

    /// A chat event like the reference workload's (about 700 bytes).
    fn chat_event(i: u64) -> OutEvent {
        let json = serde_json::json!({
            "messageId": format!("3f1c2a9e-0b7d-4c1e-9a55-{i:012}"),
            "type": "track",
            "event": "Message Sent",
            "userId": format!("user-{}", i % 5000),
            "anonymousId": format!("anon-{}", i % 7000),
            "receivedAt": "2026-11-22T10:15:30.123Z",
            "sentAt": "2026-11-22T10:15:29.900Z",
            "timestamp": "2026-11-22T10:15:30.001Z",
            "originalTimestamp": "2026-11-22T10:15:29.778Z",
            "channel": "server",
            "context": {
                "library": {"name": "chat-core", "version": "9.4.1"},
                "ip": "10.1.2.3",
                "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
                "locale": "en-US",
                "team": {"id": "team-42", "plan": "enterprise"}
            },
            "properties": {
                "channel_id": format!("chan-{}", i % 300),
                "channel_type": "public",
                "post_id": format!("post-{i}"),
                "root_id": null,
                "length": 87 + i % 200,
                "has_attachments": i.is_multiple_of(7),
                "mentions": i % 3,
                "broadcast_to": 20
            }
        });
        event(i, &json.to_string())
    }

    /// Rough cost of Parquet encoding; run with
    /// `cargo test -p sluice-destinations --lib parquet_encoding_speed -- --ignored --nocapture`
    /// (add `--release` for production-like figures).
    #[test]
    #[ignore]
    fn parquet_encoding_speed() {
        let events: Vec<OutEvent> = (0..10_000).map(chat_event).collect();
        let json_bytes: usize = events.iter().map(|e| e.json.len()).sum();
        encode(S3Format::Parquet, DEFAULT_GZIP_LEVEL, &events[..100], Utc::now()).unwrap(); // warm-up
        for format in [S3Format::Parquet, S3Format::NdjsonGzip] {
            // The fastest of five: the host is shared, and the slower runs measure its neighbours.
            let (elapsed, encoded) = (0..5)
                .map(|_| {
                    let started = std::time::Instant::now();
                    let encoded = encode(format, DEFAULT_GZIP_LEVEL, &events, Utc::now()).unwrap();
                    (started.elapsed(), encoded)
                })
                .min_by_key(|(elapsed, _)| *elapsed)
                .unwrap();
            println!(
                "{format:?}: 10,000 chat events ({:.1} MB JSON) -> {:.2} MB in {:.1} ms ({:.0} events/s)",
                json_bytes as f64 / 1e6,
                encoded.bytes.len() as f64 / 1e6,
                elapsed.as_secs_f64() * 1e3,
                10_000.0 / elapsed.as_secs_f64()
            );
        }
    }
}
