//! `sluice dlq list | show | replay | purge`.

use std::io::Write;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use sluice_router::DeadLetters;
use sluice_transformer::Registry;

use crate::config::Config;

pub fn list(config: &Config, destination: Option<&str>, out: &mut dyn Write) -> anyhow::Result<usize> {
    let dlq = DeadLetters::open(config.dead_letter_dir())?;
    let ids = dlq.ids(destination)?;
    writeln!(out, "{:<48} {:<20} {:<9} {:>6} {:>8}  reason", "id", "destination", "stage", "events", "attempts")?;
    for (dest, id) in &ids {
        let e = dlq.get(dest, id)?;
        let stage = format!("{:?}", e.stage).to_lowercase();
        let reason: String = e.reason.chars().take(100).collect();
        writeln!(out, "{:<48} {:<20} {:<9} {:>6} {:>8}  {reason}", e.id, e.destination, stage, e.events.len(), e.attempts)?;
    }
    Ok(ids.len())
}

pub fn show(config: &Config, id: &str, out: &mut dyn Write) -> anyhow::Result<()> {
    let dlq = DeadLetters::open(config.dead_letter_dir())?;
    let entry = dlq.find(id)?;
    serde_json::to_writer_pretty(&mut *out, &entry)?;
    writeln!(out)?;
    Ok(())
}

/// What `sluice dlq replay` did, over all entries.
pub struct ReplaySummary {
    /// Events delivered.
    pub replayed: usize,
    /// Events the destination no longer takes under its current `sources`/`filter` rules.
    pub filtered: u64,
    /// Entries that failed again and stay in the store.
    pub failed: usize,
}

/// Replays entries through their destination (built from the config, so a fixed URL or
/// credential takes effect). Entries that fail again stay in the store.
pub fn replay(config: &Config, destination: Option<&str>, progress: bool) -> anyhow::Result<ReplaySummary> {
    let dlq = DeadLetters::open(config.dead_letter_dir())?;
    let ids = dlq.ids(destination)?;
    let registry = Registry::load(&config.transformations)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let mut built = std::collections::HashMap::new();
        let bar = if progress { ProgressBar::new(ids.len() as u64) } else { ProgressBar::hidden() };
        bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} entries  {msg}").expect("static template"));
        let (mut replayed, mut filtered, mut failed) = (0usize, 0u64, 0usize);
        for (dest, id) in &ids {
            let d = config
                .destinations
                .iter()
                .find(|d| &d.id == dest)
                .with_context(|| format!("dead letters of {dest:?}, which is not in the config any more"))?;
            if !built.contains_key(dest) {
                let destination = d.sink.build().await.with_context(|| format!("building destination {dest}"))?;
                built.insert(dest.clone(), (destination, registry.chain(&d.transformations)?));
            }
            let (destination, chain) = &built[dest];
            let entry = dlq.get(dest, id)?;
            match sluice_router::replay(&dlq, &entry, d, destination.as_ref(), chain).await {
                Ok(r) => {
                    replayed += r.delivered;
                    filtered += r.filtered;
                }
                Err(e) => {
                    failed += 1;
                    bar.println(format!("{id}: {e}"));
                }
            }
            bar.inc(1);
            bar.set_message(format!("{replayed} events replayed, {filtered} filtered out, {failed} entries failed"));
        }
        bar.finish();
        Ok(ReplaySummary { replayed, filtered, failed })
    })
}

pub fn purge(config: &Config, destination: Option<&str>) -> anyhow::Result<usize> {
    let dlq = DeadLetters::open(config.dead_letter_dir())?;
    let ids = dlq.ids(destination)?;
    for (dest, id) in &ids {
        dlq.remove(dest, id)?;
    }
    Ok(ids.len())
}
