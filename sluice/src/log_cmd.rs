//! `sluice log cursors | drop-cursor`: where each destination is in the event log, and a way to
//! let go of the cursor of a destination that was removed from the config. Both only read the
//! log (and delete one cursor file), so they are safe while `sluice run` is running.

use std::io::Write;

use anyhow::bail;
use sluice_eventlog::CursorState;

use crate::config::Config;

/// One line of `sluice log cursors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorRow {
    pub state: CursorState,
    /// `active` (enabled in the config), `disabled` (in the config, `enabled: false`) or
    /// `stale` (a cursor file no destination in the config owns).
    pub status: &'static str,
}

/// The destinations of the config, then the stale cursors.
pub fn rows(config: &Config) -> anyhow::Result<Vec<CursorRow>> {
    embedded_only(config)?;
    let state = sluice_eventlog::inspect(&config.log.dir)?;
    let mut rows: Vec<CursorRow> = config
        .destinations
        .iter()
        .map(|d| CursorRow { state: state.cursor(&d.id), status: if d.enabled { "active" } else { "disabled" } })
        .collect();
    for c in &state.cursors {
        if !config.destinations.iter().any(|d| d.id == c.id) {
            rows.push(CursorRow { state: c.clone(), status: "stale" });
        }
    }
    Ok(rows)
}

pub fn cursors(config: &Config, out: &mut dyn Write) -> anyhow::Result<Vec<CursorRow>> {
    let rows = rows(config)?;
    writeln!(out, "{:<32} {:>20} {:>12} {:>14}  status", "id", "position", "lag_events", "held_bytes")?;
    for r in &rows {
        let position = r.state.position.map_or_else(|| "-".to_string(), |p| p.to_string());
        writeln!(out, "{:<32} {:>20} {:>12} {:>14}  {}", r.state.id, position, r.state.lag, r.state.held_bytes, r.status)?;
    }
    Ok(rows)
}

/// Deletes the cursor of `id`, which must not be a destination of the config (its worker, or
/// its return from `enabled: false`, would start over from the oldest record).
pub fn drop_cursor(config: &Config, id: &str) -> anyhow::Result<CursorState> {
    embedded_only(config)?;
    if let Some(d) = config.destinations.iter().find(|d| d.id == id) {
        let how = if d.enabled { "" } else { " (disabled)" };
        bail!("destination {id:?} is in the config{how}; only the cursor of a destination removed from the config can be dropped");
    }
    let state = sluice_eventlog::inspect(&config.log.dir)?;
    let Some(found) = state.cursors.iter().find(|c| c.id == id).cloned() else {
        bail!("no cursor {id:?} in {}", config.log.dir.join("cursors").display());
    };
    sluice_eventlog::drop_cursor(&config.log.dir, id)?;
    Ok(found)
}

/// Cursors are the embedded log's; Kafka keeps a consumer group per destination instead.
fn embedded_only(config: &Config) -> anyhow::Result<()> {
    if config.log.backend == crate::config::Backend::Kafka {
        bail!(
            "`sluice log` looks at the embedded log; with log.backend: kafka each destination is the consumer group sluice-<destination id>: look at it with your Kafka tools (e.g. kafka-consumer-groups --describe --group sluice-<id>)"
        );
    }
    Ok(())
}
