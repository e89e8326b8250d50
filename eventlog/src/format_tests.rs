//! The record format across versions: version 2 carries the write key id, version 1 logs (written
//! before it existed) still open and read.

use super::*;
use crate::tests::{config, read_all};

/// A version 1 record, byte for byte as the previous release wrote it.
pub(crate) fn v1_record(source: &str, event: &str) -> Vec<u8> {
    let mut payload = vec![1u8, source.len() as u8];
    payload.extend_from_slice(source.as_bytes());
    payload.extend_from_slice(event.as_bytes());
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

#[tokio::test]
async fn write_key_ids_are_stored_with_each_record() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    let mut batch = AppendBatch::default();
    batch.push("web", "mobile-2026", br#"{"messageId":"a"}"#);
    batch.push("web", "", br#"{"messageId":"b"}"#);
    batch.push("ios", "sha256:0123456789ab", br#"{"messageId":"c"}"#);
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
    batch.push("web", "k1", br#"{"messageId":"new-2"}"#);
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
    segment::encode_record(&mut buf, "web", "key", b"{}");
    // Claim a longer key id than the record holds, and fix the checksum so only the length is wrong.
    buf[8 + 2 + 3] = 200;
    let crc = crc32fast::hash(&buf[8..]);
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(segment::parse_record(&buf), segment::Parsed::Invalid(r) if r.contains("write key id")));
}
