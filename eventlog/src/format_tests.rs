//! The record format across versions: version 2 carries the write key id, version 1 logs (written
//! before it existed) still open and read.

use super::*;
use crate::tests::{config, read_all};

/// A version 1 record, byte for byte as the previous release wrote it.
pub(crate) fn v1_record(source: &str, event: &str) -> Vec<u8> {
    let mut payload = vec![1u8, source.len() as u8];
    payload.extend_from_slice(source.as_bytes());
    payload.extend_from_slice(event.as_bytes());
    framed(&payload)
}

/// `payload` framed as a segment stores it: `len | crc32 | payload`.
fn framed(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn write_key_ids_are_stored_with_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    let mut batch = AppendBatch::default();
    batch.push_event("web", "mobile-2026", br#"{"messageId":"a"}"#);
    batch.push_event("web", "", br#"{"messageId":"b"}"#);
    batch.push_event("ios", "sha256:0123456789ab", br#"{"messageId":"c"}"#);
    log.append(batch).await.unwrap();
    let got = read_all(&log, "d").await;
    let seen: Vec<(&str, &str, &[u8])> = got.iter().map(|r| (&*r.source, &*r.write_key_id, &r.event[..])).collect();
    assert_eq!(
        seen,
        [
            ("web", "mobile-2026", &br#"{"messageId":"a"}"#[..]),
            ("web", "", &br#"{"messageId":"b"}"#[..]),
            ("ios", "sha256:0123456789ab", &br#"{"messageId":"c"}"#[..]),
        ]
    );
}

#[tokio::test]
async fn a_log_of_version_1_records_opens_reads_and_takes_version_2_appends() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let mut old = v1_record("web", r#"{"messageId":"old-0"}"#);
    old.extend(v1_record("chat", r#"{"messageId":"old-1"}"#));
    std::fs::write(dir.path().join("segments").join(format!("{:020}.log", 0)), &old).unwrap();

    let log = EventLog::open(config(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 2, "both version 1 records survive recovery");
    let mut batch = AppendBatch::default();
    batch.push_event("web", "k1", br#"{"messageId":"new-2"}"#);
    log.append(batch).await.unwrap();
    let got = read_all(&log, "d").await;
    let seen: Vec<(u64, &str, &str, &[u8])> =
        got.iter().map(|r| (r.offset, &*r.source, &*r.write_key_id, &r.event[..])).collect();
    assert_eq!(
        seen,
        [
            (0, "web", "", &br#"{"messageId":"old-0"}"#[..]),
            (1, "chat", "", &br#"{"messageId":"old-1"}"#[..]),
            (2, "web", "k1", &br#"{"messageId":"new-2"}"#[..]),
        ]
    );
}

#[test]
fn a_version_2_record_whose_key_id_overruns_it_is_invalid() {
    let mut buf = Vec::new();
    segment::encode_record(&mut buf, "web", "key", None, b"{}", &[]);
    // Claim a longer key id than the record holds, and fix the checksum so only the length is wrong.
    buf[8 + 2 + 3] = 200;
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(segment::parse_record(&buf), segment::Parsed::Invalid(r) if r.contains("write key id")));
}

/// A version 2 record, byte for byte as the previous release wrote it.
fn v2_record(source: &str, key_id: &str, event: &str) -> Vec<u8> {
    let mut payload = vec![2u8, source.len() as u8];
    payload.extend_from_slice(source.as_bytes());
    payload.push(key_id.len() as u8);
    payload.extend_from_slice(key_id.as_bytes());
    payload.extend_from_slice(event.as_bytes());
    framed(&payload)
}

#[tokio::test]
async fn every_version_reads_with_its_head_and_version_3_keeps_the_one_it_was_given() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("segments")).unwrap();
    let mut old = v1_record("web", r#"{"type":"track","event":"Old","userId":"u1","messageId":"m0"}"#);
    old.extend(v2_record("web", "k", r#"{"type":"identify","anonymousId":"a2","messageId":"m1","integrations":{"All":false}}"#));
    old.extend(v2_record("web", "k", "[1,2]"));
    std::fs::write(dir.path().join("segments").join(format!("{:020}.log", 0)), &old).unwrap();

    let log = EventLog::open(config(dir.path())).unwrap();
    let mut batch = AppendBatch::default();
    // A head that differs from the event's own fields: what the log returns must be the stored
    // head, not one read from the event again.
    let given = EventHead {
        kind: Some(EventKind::Page),
        event: None,
        user: "given-user".into(),
        message_id: "given-id".into(),
        received_at: "2026-12-02T02:00:00.000Z".into(),
        integrations: None,
    };
    batch.push("web", "k", &given, br#"{"type":"track","userId":"other"}"#, &[]);
    batch.push_event("web", "k", br#"{"type":"group","userId":7}"#);
    let users: Vec<&str> = batch.records().map(|r| r.user).collect();
    assert_eq!(users, ["given-user", "7"]);
    log.append(batch).await.unwrap();

    let got = read_all(&log, "d").await;
    let heads: Vec<Option<EventHead<'_>>> = got.iter().map(Record::head).collect();
    let h0 = heads[0].as_ref().unwrap();
    assert_eq!((h0.kind, h0.event.as_deref(), &*h0.user, &*h0.message_id), (Some(EventKind::Track), Some("Old"), "u1", "m0"));
    let h1 = heads[1].as_ref().unwrap();
    assert_eq!((h1.kind, &*h1.user, h1.integrations.as_deref()), (Some(EventKind::Identify), "a2", Some(r#"{"All":false}"#)));
    assert_eq!(heads[2], None, "an event that is not an object has no head");
    assert_eq!(heads[3].as_ref(), Some(&given));
    assert_eq!(heads[4].as_ref().map(|h| (h.kind, &*h.user)), Some((Some(EventKind::Group), "7")));
}

#[test]
fn a_batch_record_is_a_payload_that_decodes_on_its_own() {
    let mut batch = AppendBatch::default();
    let head = EventHead { kind: Some(EventKind::Track), user: "u".into(), ..Default::default() };
    batch.push("ios", "k9", &head, br#"{"userId":"u"}"#, &[]);
    let record = batch.records().next().unwrap();
    assert_eq!(record.user, "u");
    let back = Record::from_payload(5, bytes::Bytes::copy_from_slice(record.payload)).unwrap();
    assert_eq!((&*back.source, &*back.write_key_id, back.head()), ("ios", "k9", Some(head)));
}
