use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::*;

/// A small log (4 KiB segments) in `dir`; shared by the other test modules of this crate.
pub(crate) fn config(dir: &Path) -> LogConfig {
    LogConfig { dir: dir.to_path_buf(), segment_bytes: 4096, disk_budget_bytes: 1 << 20 }
}

fn batch(source: &str, events: &[String]) -> AppendBatch {
    let mut b = AppendBatch::default();
    for e in events {
        b.push_event(source, "", e.as_bytes());
    }
    b
}

fn events(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"messageId\":\"{prefix}-{i}\"}}")).collect()
}

/// Everything `consumer` can read from its cursor on.
pub(crate) async fn read_all(log: &EventLog, consumer: &str) -> Vec<Record> {
    let mut reader = log.reader(consumer).unwrap();
    let mut out = Vec::new();
    loop {
        let got = reader.read(1000, 1 << 20, Duration::from_millis(50)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[tokio::test]
async fn appended_records_read_back_in_order_with_offsets_and_sources() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    assert_eq!(log.append(batch("web", &events("a", 3))).await.unwrap(), 0);
    assert_eq!(log.append(batch("ios", &events("b", 2))).await.unwrap(), 3);
    let got = read_all(&log, "dest").await;
    let seen: Vec<(u64, String, String)> = got
        .iter()
        .map(|r| (r.offset, r.source.to_string(), String::from_utf8(r.event.to_vec()).unwrap()))
        .collect();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], (0, "web".into(), "{\"messageId\":\"a-0\"}".into()));
    assert_eq!(seen[4], (4, "ios".into(), "{\"messageId\":\"b-1\"}".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_offsets_and_all_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(config(dir.path())).unwrap();
        let mut tasks = Vec::new();
        for t in 0..20 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut firsts = Vec::new();
                for i in 0..10 {
                    firsts.push(log.append(batch("web", &events(&format!("t{t}-{i}"), 3))).await.unwrap());
                }
                firsts
            }));
        }
        let mut firsts: Vec<u64> = Vec::new();
        for t in tasks {
            firsts.extend(t.await.unwrap());
        }
        firsts.sort();
        assert_eq!(firsts, (0..200).map(|i| i * 3).collect::<Vec<_>>());
        assert!(log.segment_count() > 1, "4 KiB segments must have rolled");
    }
    let log = EventLog::open(config(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 600);
    let got = read_all(&log, "dest").await;
    assert_eq!(got.len(), 600);
    assert!(got.windows(2).all(|w| w[1].offset == w[0].offset + 1));
    let mut ids: Vec<_> = got.iter().map(|r| r.event.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 600);
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("segments")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().unwrap()
}

#[tokio::test]
async fn torn_tail_is_cut_on_open_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(config(dir.path())).unwrap();
        log.append(batch("web", &events("a", 2))).await.unwrap();
    }
    // A crash mid-write: half a record at the end.
    let mut half = Vec::new();
    segment::encode_record(&mut half, "web", "", None, b"{\"messageId\":\"torn\"}", &[]);
    let seg = newest_segment(dir.path());
    let good_len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(&seg).unwrap().write_all(&half[..half.len() / 2]).unwrap();

    let log = EventLog::open(config(dir.path())).unwrap();
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), good_len, "torn bytes must be cut");
    assert_eq!(log.next_offset(), 2);
    log.append(batch("web", &events("b", 1))).await.unwrap();
    let got = read_all(&log, "dest").await;
    let ids: Vec<_> = got.iter().map(|r| String::from_utf8(r.event.to_vec()).unwrap()).collect();
    assert_eq!(ids, ["{\"messageId\":\"a-0\"}", "{\"messageId\":\"a-1\"}", "{\"messageId\":\"b-0\"}"]);
}

#[tokio::test]
async fn record_with_bad_checksum_at_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(config(dir.path())).unwrap();
        log.append(batch("web", &events("a", 3))).await.unwrap();
    }
    let seg = newest_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0xff; // flip a byte inside the last record's payload
    std::fs::write(&seg, &bytes).unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    assert_eq!(log.next_offset(), 2);
    assert_eq!(read_all(&log, "dest").await.len(), 2);
}

#[tokio::test]
async fn cursors_persist_and_each_consumer_reads_independently() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EventLog::open(config(dir.path())).unwrap();
        log.append(batch("web", &events("a", 5))).await.unwrap();
        let mut r = log.reader("fast").unwrap();
        let got = r.read(3, 1 << 20, Duration::ZERO).await.unwrap();
        assert_eq!(got.len(), 3);
        log.commit("fast", r.position()).unwrap();
    }
    let log = EventLog::open(config(dir.path())).unwrap();
    assert_eq!(log.cursor("fast").unwrap(), Some(3));
    assert_eq!(read_all(&log, "fast").await.len(), 2);
    assert_eq!(read_all(&log, "slow").await.len(), 5);
}

#[tokio::test]
async fn segments_are_deleted_only_after_every_consumer_passed_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    let mut a = log.reader("a").unwrap();
    let _b = log.reader("b").unwrap();
    for i in 0..40 {
        log.append(batch("web", &events(&format!("x{i}-{}", "p".repeat(80)), 5))).await.unwrap();
    }
    let before = log.segment_count();
    assert!(before > 3);
    while !a.read(1000, 1 << 20, Duration::ZERO).await.unwrap().is_empty() {}
    log.commit("a", a.position()).unwrap();
    assert_eq!(log.segment_count(), before, "b has not read anything: nothing may go");
    log.commit("b", 200).unwrap();
    assert_eq!(log.segment_count(), 1, "only the active segment remains");
    let size_on_disk: u64 = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(log.size_bytes(), size_on_disk);
}

#[tokio::test]
async fn appends_beyond_the_disk_budget_are_refused_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { dir: dir.path().into(), segment_bytes: 4096, disk_budget_bytes: 8192 };
    let log = EventLog::open(cfg).unwrap();
    let mut r = log.reader("d").unwrap();
    let big = vec!["x".repeat(1000)];
    let mut accepted = 0;
    let err = loop {
        match log.append(batch("web", &big)).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, LogError::Full { .. }), "{err}");
    assert!(log.size_bytes() <= 8192);
    assert!(accepted >= 6);
    while !r.read(1000, 1 << 20, Duration::ZERO).await.unwrap().is_empty() {}
    log.commit("d", r.position()).unwrap();
    log.append(batch("web", &big)).await.expect("space freed by the commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_wakes_up_when_records_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let log = EventLog::open(config(dir.path())).unwrap();
    let mut r = log.reader("d").unwrap();
    let writer = log.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        writer.append(batch("web", &events("late", 1))).await.unwrap();
    });
    let got = r.read(10, 1 << 20, Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.len(), 1);
    assert!(r.read(10, 1 << 20, Duration::from_millis(20)).await.unwrap().is_empty());
}

#[tokio::test]
async fn records_larger_than_a_read_chunk_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig { dir: dir.path().into(), segment_bytes: 4 << 20, disk_budget_bytes: 64 << 20 };
    let log = EventLog::open(cfg).unwrap();
    let big = format!("{{\"p\":\"{}\"}}", "y".repeat(600 << 10));
    log.append(batch("web", &events("s", 1))).await.unwrap();
    log.append(batch("web", std::slice::from_ref(&big))).await.unwrap();
    let got = read_all(&log, "d").await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].event.len(), big.len());
}

#[test]
fn consumer_names_that_could_escape_the_directory_are_refused() {
    assert!(cursor::check_name("../etc").is_err());
    assert!(cursor::check_name("").is_err());
    assert!(cursor::check_name("warehouse_s3-1").is_ok());
}
