//! Consumer cursors: one small file per consumer, replaced atomically (write, sync, rename, sync
//! directory) so a crash leaves either the old or the new value, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::LogError;

pub(crate) fn check_name(consumer: &str) -> Result<(), LogError> {
    let ok = !consumer.is_empty()
        && consumer.len() <= 128
        && consumer.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !consumer.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(LogError::Config(format!(
            "consumer name {consumer:?} must be 1-128 of [A-Za-z0-9_.-] and not start with '.'"
        )))
    }
}

/// Every cursor file as (consumer, next offset), sorted by consumer.
pub(crate) fn list(dir: &Path) -> Result<Vec<(String, u64)>, LogError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir.join("cursors")) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // Temporary files of an interrupted store start with a dot.
        if let Some(consumer) = name.strip_suffix(".offset").filter(|c| check_name(c).is_ok()) {
            if let Some(offset) = load(dir, consumer)? {
                out.push((consumer.to_string(), offset));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn exists(dir: &Path, consumer: &str) -> bool {
    path(dir, consumer).exists()
}

/// Deletes a consumer's cursor file; false if it had none.
pub(crate) fn remove(dir: &Path, consumer: &str) -> Result<bool, LogError> {
    check_name(consumer)?;
    match std::fs::remove_file(path(dir, consumer)) {
        Ok(()) => {
            std::fs::File::open(dir.join("cursors"))?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn path(dir: &Path, consumer: &str) -> PathBuf {
    dir.join("cursors").join(format!("{consumer}.offset"))
}

pub(crate) fn load(dir: &Path, consumer: &str) -> Result<Option<u64>, LogError> {
    match std::fs::read_to_string(path(dir, consumer)) {
        Ok(s) => s.trim().parse().map(Some).map_err(|_| LogError::Corrupt {
            segment: format!("cursors/{consumer}.offset"),
            position: 0,
            reason: format!("not a number: {s:?}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn store(dir: &Path, consumer: &str, offset: u64) -> Result<(), LogError> {
    check_name(consumer)?;
    let cursors = dir.join("cursors");
    let tmp = cursors.join(format!(".{consumer}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{offset}")?;
    f.sync_data()?;
    std::fs::rename(&tmp, path(dir, consumer))?;
    std::fs::File::open(&cursors)?.sync_all()?;
    Ok(())
}
