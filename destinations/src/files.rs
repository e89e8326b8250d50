//! The `files` destination: one gzip NDJSON file per batch in a local directory, partitioned by
//! date and hour (`{path}/{yyyy}/{mm}/{dd}/{hh}/{first_offset}-{last_offset}.ndjson.gz`).
//!
//! A file is written under a temporary name, fsynced and then renamed, so a reader never sees a
//! half-written file and a retried batch replaces its earlier copy instead of adding a second one.
//! Every part of the path comes from the batch: the hour is the UTC `receivedAt` of its first
//! event (as in the S3 sink), not the clock, so a retry after the hour turned over lands on the
//! same file. Only a first event without a parsable `receivedAt` falls back to the clock.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{Datelike, Timelike, Utc};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Deserialize;

use crate::{Batch, Delivered, DeliveryError, Destination};

/// Settings of a `files` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Directory the partitioned files are written under. Created if missing.
    pub path: PathBuf,
    /// Gzip level, 0 (none) to 9 (smallest).
    #[serde(default = "default_level")]
    pub gzip_level: u32,
}

fn default_level() -> u32 {
    crate::DEFAULT_GZIP_LEVEL
}

impl FilesConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("path must not be empty".into());
        }
        crate::check_gzip_level(self.gzip_level)
    }
}

pub struct FilesDestination {
    config: FilesConfig,
}

impl FilesDestination {
    pub fn new(config: FilesConfig) -> Result<Self, DeliveryError> {
        std::fs::create_dir_all(&config.path).map_err(|e| {
            DeliveryError::Config(format!("cannot create {}: {e}", config.path.display()))
        })?;
        Ok(FilesDestination { config })
    }

    fn write(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let hour = batch.events.first().and_then(|e| crate::received_at(&e.json)).unwrap_or_else(Utc::now);
        let dir = self.config.path.join(format!(
            "{:04}/{:02}/{:02}/{:02}",
            hour.year(),
            hour.month(),
            hour.day(),
            hour.hour()
        ));
        std::fs::create_dir_all(&dir)?;
        let name = format!("{}.ndjson.gz", batch.span_name(batch.first_offset(), batch.last_offset()));
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut gz = GzEncoder::new(Vec::with_capacity(batch.bytes() / 4), Compression::new(self.config.gzip_level));
        for event in &batch.events {
            gz.write_all(&event.json)?;
            gz.write_all(b"\n")?;
        }
        let bytes = gz.finish()?;
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        std::fs::rename(&tmp, dir.join(&name))?;
        // The rename is only durable once the directory entry is.
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }
}

#[async_trait]
impl Destination for FilesDestination {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        tokio::task::block_in_place(|| self.write(batch))?;
        Ok(Delivered::default())
    }
}

/// Every `messageId` in the files under the sink's path (read back for `sluice reconcile`).
/// Files are decoded on all cores; files still being written (a leading dot) are skipped.
pub fn landed_ids(config: &FilesConfig) -> Result<crate::LandedIds, DeliveryError> {
    let mut files = Vec::new();
    let mut stack = vec![config.path.clone()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(DeliveryError::Config(format!("cannot read {}: {e}", dir.display()))),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else if name.to_string_lossy().ends_with(".ndjson.gz") {
                files.push(entry.path());
            }
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(files.len().max(1));
    let chunk = files.len().div_ceil(threads).max(1);
    let parts: Vec<Result<crate::LandedIds, DeliveryError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut ids = crate::LandedIds::default();
                    let mut text = Vec::new();
                    for path in part {
                        text.clear();
                        let file = std::fs::File::open(path)?;
                        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)), &mut text)
                            .map_err(|e| DeliveryError::Config(format!("{}: {e}", path.display())))?;
                        ids.push_ndjson(&text);
                        ids.objects += 1;
                    }
                    Ok(ids)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(DeliveryError::Config("reader thread panicked".into())))).collect()
    });
    let mut all = crate::LandedIds::default();
    for part in parts {
        all.append(part?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OutEvent;
    use std::io::Read;
    use std::sync::Arc;

    fn batch(offsets: &[u64]) -> Batch {
        Batch {
            destination: Arc::from("files"),
            partition: None,
            events: offsets
                .iter()
                .map(|o| OutEvent {
                    offset: *o,
                    source: Arc::from("web"),
                    json: format!("{{\"messageId\":\"m{o}\"}}").into_bytes().into(),
                })
                .collect(),
        }
    }

    fn read_all(root: &std::path::Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let mut s = String::new();
                    flate2::read::GzDecoder::new(std::fs::File::open(&p).unwrap())
                        .read_to_string(&mut s)
                        .unwrap();
                    out.push((p.file_name().unwrap().to_string_lossy().into_owned(), s));
                }
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_one_gzip_ndjson_file_per_batch_and_overwrites_on_retry() {
        let dir = tempfile::tempdir().unwrap();
        let dest = FilesDestination::new(FilesConfig { path: dir.path().into(), gzip_level: 6 }).unwrap();
        dest.deliver(&batch(&[3, 4])).await.unwrap();
        dest.deliver(&batch(&[3, 4])).await.unwrap();
        let files = read_all(dir.path());
        assert_eq!(files.len(), 1, "a retried batch must replace its file: {files:?}");
        assert_eq!(files[0].0, "00000000000000000003-00000000000000000004.ndjson.gz");
        assert_eq!(files[0].1, "{\"messageId\":\"m3\"}\n{\"messageId\":\"m4\"}\n");
        let landed = landed_ids(&FilesConfig { path: dir.path().into(), gzip_level: 6 }).unwrap();
        assert_eq!((landed.others.clone(), landed.objects), (vec!["m3".to_string(), "m4".to_string()], 1));
    }

    /// A batch received at 13:59 and retried after 14:00 must land on its first file, in the
    /// hour of its events, never in a second file under the hour of the retry.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_hour_directory_comes_from_the_batch_not_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let dest = FilesDestination::new(FilesConfig { path: dir.path().into(), gzip_level: 1 }).unwrap();
        let mut b = batch(&[7, 8]);
        b.events[0].json = br#"{"messageId":"m7","receivedAt":"2024-05-01T13:59:59.900Z"}"#.to_vec().into();
        b.events[1].json = br#"{"messageId":"m8","receivedAt":"2024-05-01T14:00:00.100Z"}"#.to_vec().into();
        dest.deliver(&b).await.unwrap();
        dest.deliver(&b).await.unwrap();
        let expected = dir.path().join("2024/05/01/13/00000000000000000007-00000000000000000008.ndjson.gz");
        assert!(expected.is_file(), "not at {}: {:?}", expected.display(), read_all(dir.path()));
        assert_eq!(read_all(dir.path()).len(), 1, "one file for the batch and its retry");
    }
}
