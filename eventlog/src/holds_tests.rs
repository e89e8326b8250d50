//! Which segments a consumer holds (a disabled destination, a stale cursor) and how a reader
//! quarantines a corrupt record instead of stopping on it.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::tests::config;

/// Appends `n` events of ~100 bytes named `{tag}-{i}` (one append per event, so 4 KiB segments
/// fill and seal as they would under traffic).
async fn append(log: &EventLog, tag: &str, n: usize) {
    for i in 0..n {
        let mut b = AppendBatch::default();
        b.push_event("web", "", format!("{{\"messageId\":\"{tag}-{i}\",\"pad\":\"{}\"}}", "p".repeat(80)).as_bytes());
        log.append(b).await.unwrap();
    }
}

async fn drain(reader: &mut Reader) -> Vec<Record> {
    let mut out = Vec::new();
    loop {
        let got = reader.read(1000, 1 << 20, Duration::from_millis(20)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

fn ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            let v = String::from_utf8(r.event.to_vec()).unwrap();
            v.split('"').nth(3).unwrap().to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_consumer_handed_to_hold_for_keeps_its_segments_without_ever_reading() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    // "later" is a disabled destination: in the config, no reader.
    assert!(log.hold_for(&["now", "later"]).unwrap().is_empty());
    append(&log, "a", 200).await;
    assert!(log.segment_count() > 3);
    let mut now = log.reader("now").unwrap();
    drain(&mut now).await;
    log.commit("now", now.position()).unwrap();
    assert!(log.segment_count() > 3, "segments went while a configured destination had not read them");

    let mut later = log.reader("later").unwrap();
    let got = drain(&mut later).await;
    assert_eq!(got.len(), 200, "the disabled destination gets its whole backlog");
    assert_eq!(got[0].offset, 0);
    log.commit("later", later.position()).unwrap();
    assert_eq!(log.segment_count(), 1, "once both passed, only the active segment is left");
}

#[tokio::test]
async fn a_stale_cursor_holds_segments_is_reported_and_can_be_dropped_while_the_log_runs() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(config(dir.path())).unwrap();
        append(&log, "a", 10).await;
        log.commit("gone", 3).unwrap();
    }
    let log = EventLog::open(config(dir.path())).unwrap();
    let stale = log.hold_for(&["now"]).unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].id, "gone");
    assert_eq!(stale[0].position, Some(3));
    assert_eq!(stale[0].lag, 7);
    assert_eq!(stale[0].held_bytes, log.size_bytes(), "it holds everything from offset 3 on");

    append(&log, "b", 200).await;
    let mut now = log.reader("now").unwrap();
    drain(&mut now).await;
    log.commit("now", now.position()).unwrap();
    let held = log.segment_count();
    assert!(held > 3, "the stale cursor keeps the segments");

    let state = inspect(dir.path()).unwrap();
    assert_eq!(state.next_offset, 210);
    let ids: Vec<_> = state.cursors.iter().map(|c| (c.id.as_str(), c.position, c.lag)).collect();
    assert_eq!(ids, [("gone", Some(3), 207), ("now", Some(210), 0)]);
    assert_eq!(state.cursor("never").position, None);

    assert!(drop_cursor(dir.path(), "gone").unwrap());
    assert!(!drop_cursor(dir.path(), "gone").unwrap(), "already gone");
    // The next commit of any consumer frees what only the dropped cursor held.
    log.commit("now", now.position()).unwrap();
    assert_eq!(log.segment_count(), 1);
}

/// Offsets of the records in the first (sealed) segment and their byte positions.
fn records_of(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 0;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, 8 + len));
        at += 8 + len;
    }
    out
}

async fn corrupt_then_read(damage: impl Fn(&mut Vec<u8>, &[(usize, usize)])) -> (Vec<Record>, Vec<CorruptRecord>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    append(&log, "a", 100).await;
    assert!(log.segment_count() >= 3);
    let first = segment::segment_path(dir.path(), 0);
    let mut bytes = std::fs::read(&first).unwrap();
    let records = records_of(&first);
    damage(&mut bytes, &records);
    std::fs::write(&first, &bytes).unwrap();
    let mut reader = log.reader("dest").unwrap();
    let got = drain(&mut reader).await;
    let corrupt = reader.take_corrupt();
    assert!(reader.take_corrupt().is_empty(), "taken once");
    assert_eq!(reader.position(), 100);
    (got, corrupt, dir)
}

#[tokio::test]
async fn a_record_whose_payload_fails_its_checksum_is_quarantined_alone() {
    let (got, corrupt, dir) = corrupt_then_read(|bytes, records| {
        let (at, len) = records[5];
        bytes[at + len - 3] ^= 0xff;
    })
    .await;
    assert_eq!(got.len(), 99, "every other record is read");
    assert!(got.iter().all(|r| r.offset != 5));
    assert_eq!(got[5].offset, 6);
    assert_eq!(ids(&got)[5], "a-6");
    assert_eq!(corrupt.len(), 1);
    let c = &corrupt[0];
    assert_eq!((c.offset, c.records), (5, 1));
    assert!(c.reason.contains("checksum"), "{}", c.reason);
    assert!(c.segment.ends_with("00000000000000000000.log"));
    assert!(String::from_utf8_lossy(&c.bytes).contains("a-5"), "the raw bytes are kept");

    // A reader opened later at a cursor before the bad record walks past it the same way.
    let log = EventLog::open(config(dir.path())).unwrap();
    log.commit("again", 2).unwrap();
    let mut again = log.reader("again").unwrap();
    let got = drain(&mut again).await;
    assert_eq!(got.len(), 97);
    assert_eq!(again.take_corrupt()[0].offset, 5);
}

#[tokio::test]
async fn a_record_with_a_damaged_header_is_skipped_to_the_next_valid_record() {
    let (got, corrupt, dir) = corrupt_then_read(|bytes, records| {
        // A length far past the segment's end.
        let (at, _) = records[3];
        bytes[at + 2] = 0x7f;
    })
    .await;
    assert_eq!(got.len(), 99);
    assert_eq!(ids(&got)[3], "a-4");
    assert_eq!(got[3].offset, 4, "offsets after the damage stay right");
    assert_eq!((corrupt[0].offset, corrupt[0].records), (3, 1));

    // A reader positioned after the damage (the cursor of a restart) finds its place too.
    let log = EventLog::open(config(dir.path())).unwrap();
    log.commit("later", 6).unwrap();
    let mut later = log.reader("later").unwrap();
    let got = drain(&mut later).await;
    assert_eq!(got[0].offset, 6);
    assert_eq!(ids(&got)[0], "a-6");
    assert!(later.take_corrupt().is_empty(), "the damage is behind its cursor");
}
