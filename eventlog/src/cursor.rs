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
