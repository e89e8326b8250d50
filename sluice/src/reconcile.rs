//! `sluice reconcile`: proves, per destination, that every event an application emitted landed.
//!
//! It compares an emission ledger (the chat core's `emitted.ledger`, see
//! chat-core/src/ledger.rs, or any file of one id per line) with the ids read back from each
//! destination (`landed_ids` next to each sink's writer in `destinations/`), and prints emitted,
//! landed, missing (with the first ids), duplicates and the capture rate.
//!
//! Ledger records: `<id>` intent (written before the SDK got the event), `+<id>` the SDK confirmed
//! it durably queued, `-<id>` the SDK refused it. An intent without a confirmation (the
//! application crashed between the two) counts as emitted when it landed and is reported apart
//! when it did not: it may never have been queued. A ledger without any `+`/`-` record is a plain
//! list of emitted ids.
//!
//! Ids are compared as sorted `u128`s (UUIDs), so tens of millions fit in memory and compare in
//! seconds; see docs/chat-core.md for the measured speed.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_destinations::readback::{format_uuid, parse_uuid};
use sluice_destinations::{LandedIds, SinkConfig};

use crate::config::Config;

/// What the ledger says was emitted, each list sorted and without repeats.
#[derive(Debug, Default)]
pub struct Emitted {
    pub confirmed: Vec<u128>,
    pub unconfirmed: Vec<u128>,
    pub refused: Vec<u128>,
    /// Lines that are not a record (a torn last line after a crash, or foreign text).
    pub malformed: u64,
}

impl Emitted {
    pub fn total(&self) -> usize {
        self.confirmed.len() + self.unconfirmed.len()
    }
}

fn sort_dedup(v: &mut Vec<u128>) {
    v.sort_unstable();
    v.dedup();
}

/// `a` minus `b`, both sorted.
fn minus(a: &[u128], b: &[u128]) -> Vec<u128> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

pub fn read_ledger(path: &Path) -> anyhow::Result<Emitted> {
    let file = File::open(path).with_context(|| format!("cannot open the ledger {}", path.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut intents, mut confirms, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let mut malformed = 0;
    let mut line = Vec::with_capacity(64);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = std::str::from_utf8(&line).unwrap_or("").trim_end();
        let (list, id) = match text.as_bytes().first() {
            Some(b'+') => (&mut confirms, &text[1..]),
            Some(b'-') => (&mut refused, &text[1..]),
            _ => (&mut intents, text),
        };
        match parse_uuid(id) {
            Some(u) => list.push(u),
            None if text.is_empty() => {}
            None => malformed += 1,
        }
    }
    sort_dedup(&mut intents);
    sort_dedup(&mut confirms);
    sort_dedup(&mut refused);
    if confirms.is_empty() && refused.is_empty() {
        return Ok(Emitted { confirmed: intents, unconfirmed: Vec::new(), refused, malformed });
    }
    let pending = minus(&intents, &confirms);
    let unconfirmed = minus(&pending, &refused);
    // A confirmation always follows its intent; one without (an edited ledger) still counts.
    let mut confirmed = minus(&confirms, &refused);
    confirmed.shrink_to_fit();
    Ok(Emitted { confirmed, unconfirmed, refused, malformed })
}

/// The outcome for one destination.
#[derive(Debug)]
pub struct Report {
    pub emitted: usize,
    pub landed: usize,
    pub missing: Vec<u128>,
    pub duplicates: usize,
    pub unconfirmed_not_landed: usize,
    pub not_in_ledger: usize,
    pub without_id: u64,
    pub objects: u64,
}

impl Report {
    /// Percent of emitted ids that landed, rounded down to three decimals so that 100.000 means
    /// that nothing is missing.
    pub fn capture(&self) -> f64 {
        if self.emitted == 0 {
            return 100.0;
        }
        ((self.landed as f64) * 100_000.0 / self.emitted as f64).floor() / 1000.0
    }
}

pub fn compare(emitted: &Emitted, landed: LandedIds) -> Report {
    let mut ids = landed.uuids;
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    let mut others = landed.others;
    others.sort_unstable();
    let before_others = others.len();
    others.dedup();
    let duplicates = (before - ids.len()) + (before_others - others.len());
    let missing = minus(&emitted.confirmed, &ids);
    let unconfirmed_not_landed = minus(&emitted.unconfirmed, &ids).len();
    let confirmed_landed = emitted.confirmed.len() - missing.len();
    let unconfirmed_landed = emitted.unconfirmed.len() - unconfirmed_not_landed;
    Report {
        emitted: emitted.confirmed.len() + unconfirmed_landed,
        landed: confirmed_landed + unconfirmed_landed,
        not_in_ledger: ids.len() - confirmed_landed - unconfirmed_landed + others.len(),
        missing,
        duplicates,
        unconfirmed_not_landed,
        without_id: landed.without_id,
        objects: landed.objects,
    }
}

async fn read_back(sink: &SinkConfig) -> anyhow::Result<Option<LandedIds>> {
    Ok(match sink {
        SinkConfig::Files(c) => {
            let c = c.clone();
            Some(tokio::task::spawn_blocking(move || sluice_destinations::files::landed_ids(&c)).await??)
        }
        SinkConfig::S3(c) => Some(sluice_destinations::s3::landed_ids(c).await?),
        SinkConfig::Snowflake(c) => {
            let dest = sluice_destinations::snowflake::SnowflakeDestination::new((**c).clone()).await?;
            Some(dest.landed_ids().await?)
        }
        SinkConfig::Webhook(_) => None,
    })
}

fn kind(sink: &SinkConfig) -> &'static str {
    match sink {
        SinkConfig::Files(_) => "files",
        SinkConfig::S3(_) => "s3",
        SinkConfig::Snowflake(_) => "snowflake",
        SinkConfig::Webhook(_) => "webhook",
    }
}

pub struct Options<'a> {
    pub ledger: &'a Path,
    pub destinations: &'a [String],
    /// Re-read until nothing is missing, for at most this long (the pipeline may still drain).
    pub wait: Duration,
    /// How many missing ids to print per destination.
    pub show: usize,
}

/// Prints the reconciliation; returns whether every destination holds every emitted id.
pub fn run(config: &Config, o: &Options<'_>, out: &mut dyn Write) -> anyhow::Result<bool> {
    for name in o.destinations {
        if !config.destinations.iter().any(|d| &d.id == name) {
            anyhow::bail!("no destination {name:?} in the config");
        }
    }
    let chosen: Vec<_> = config
        .destinations
        .iter()
        .filter(|d| if o.destinations.is_empty() { d.enabled } else { o.destinations.contains(&d.id) })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let deadline = Instant::now() + o.wait;
    loop {
        let started = Instant::now();
        let emitted = read_ledger(o.ledger)?;
        writeln!(
            out,
            "ledger {}: {} emitted ({} confirmed by the SDK, {} unconfirmed), {} refused by the SDK, {} malformed lines; read in {:.2} s",
            o.ledger.display(),
            emitted.total(),
            emitted.confirmed.len(),
            emitted.unconfirmed.len(),
            emitted.refused.len(),
            emitted.malformed,
            started.elapsed().as_secs_f64()
        )?;
        let mut all_ok = true;
        let mut lines = Vec::new();
        for d in &chosen {
            let t = Instant::now();
            let Some(landed) = rt.block_on(read_back(&d.sink)).with_context(|| format!("reading back destination {}", d.id))? else {
                if !o.destinations.is_empty() {
                    anyhow::bail!("destination {} ({}) cannot be read back", d.id, kind(&d.sink));
                }
                lines.push(format!("{} ({}): skipped, a webhook's receiver keeps what it got", d.id, kind(&d.sink)));
                continue;
            };
            let r = compare(&emitted, landed);
            all_ok &= r.missing.is_empty();
            let mut line = format!(
                "{} ({}): emitted {}, landed {}, missing {}, duplicates {}, capture {:.3}%  [{} objects, {:.2} s]",
                d.id,
                kind(&d.sink),
                r.emitted,
                r.landed,
                r.missing.len(),
                r.duplicates,
                r.capture(),
                r.objects,
                t.elapsed().as_secs_f64()
            );
            if !r.missing.is_empty() {
                let first: Vec<String> = r.missing.iter().take(o.show).map(|&u| format_uuid(u)).collect();
                line.push_str(&format!("\n  missing (first {}): {}", first.len(), first.join(" ")));
            }
            if r.unconfirmed_not_landed > 0 || r.not_in_ledger > 0 || r.without_id > 0 {
                line.push_str(&format!(
                    "\n  also: {} unconfirmed ids not landed (in flight when the application stopped), {} landed ids not in the ledger, {} events without a messageId",
                    r.unconfirmed_not_landed, r.not_in_ledger, r.without_id
                ));
            }
            let f = &d.filter;
            if !(f.include_types.is_empty() && f.exclude_types.is_empty() && f.include_events.is_empty() && f.exclude_events.is_empty()) {
                line.push_str("\n  note: this destination has a filter; events it skips count as missing here");
            }
            lines.push(line);
        }
        if all_ok || Instant::now() >= deadline {
            for l in lines {
                writeln!(out, "{l}")?;
            }
            return Ok(all_ok);
        }
        writeln!(out, "not everything landed yet; reading again in 2 s")?;
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> String {
        format_uuid(n)
    }

    #[test]
    fn confirmed_unconfirmed_refused_missing_and_duplicates_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emitted.ledger");
        // 1..=4 confirmed, 5 unconfirmed and landed, 6 unconfirmed not landed, 7 refused, a torn line.
        let mut text = String::new();
        for n in 1..=7 {
            text.push_str(&format!("{}\n", id(n)));
        }
        for n in 1..=4 {
            text.push_str(&format!("+{}\n", id(n)));
        }
        text.push_str(&format!("-{}\n6f1c0d3e-5a8b", id(7)));
        std::fs::write(&path, text).unwrap();
        let emitted = read_ledger(&path).unwrap();
        assert_eq!((emitted.confirmed.len(), emitted.unconfirmed.len(), emitted.refused.len(), emitted.malformed), (4, 2, 1, 1));
        let mut landed = LandedIds::default();
        for n in [1, 2, 2, 3, 5, 99] {
            landed.push(&id(n));
        }
        landed.push("not-a-uuid");
        let r = compare(&emitted, landed);
        assert_eq!(r.missing, vec![4]);
        assert_eq!((r.emitted, r.landed, r.duplicates, r.unconfirmed_not_landed, r.not_in_ledger), (5, 4, 1, 1, 2));
        assert_eq!(format!("{:.3}", r.capture()), "80.000");
    }

    #[test]
    fn capture_is_rounded_down_so_100_means_nothing_missing() {
        let r = Report { emitted: 1_000_000, landed: 999_999, missing: vec![1], duplicates: 0, unconfirmed_not_landed: 0, not_in_ledger: 0, without_id: 0, objects: 0 };
        assert_eq!(format!("{:.3}", r.capture()), "99.999");
    }

    #[test]
    fn a_plain_id_list_is_all_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.txt");
        std::fs::write(&path, format!("{}\n{}\n{}\n", id(1), id(2), id(1))).unwrap();
        let emitted = read_ledger(&path).unwrap();
        assert_eq!((emitted.confirmed.len(), emitted.unconfirmed.len()), (2, 0));
    }
}
