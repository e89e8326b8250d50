use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sluice::{config, dlq_cmd, log_cmd, reconcile, run, transform_cmd};

/// Sluice: a durable, self-hosted event pipeline.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector, the event log and the router (or one of them, see --role).
    Run {
        #[arg(long, default_value = "config/sluice.yaml")]
        config: PathBuf,
        /// What this process runs: `collector` (HTTP ingest), `router` (destination workers) or
        /// `all`. Separate roles need log.backend: kafka.
        #[arg(long, env = "SLUICE_ROLE", value_enum, default_value = "all")]
        role: run::Role,
    },
    /// Check a config file (and compile its scripts) without starting anything.
    Validate {
        #[arg(long, default_value = "config/sluice.yaml")]
        config: PathBuf,
    },
    /// Work with transformation scripts.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
    /// Inspect, replay and purge dead-lettered events.
    Dlq {
        #[arg(long, default_value = "config/sluice.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Compare an emission ledger with what each destination holds; exit 1 when ids are missing.
    Reconcile {
        #[arg(long, default_value = "config/sluice.yaml")]
        config: PathBuf,
        /// The application's emission ledger (chat-core: <data_dir>/emitted.ledger), or a file of
        /// one id per line.
        #[arg(long)]
        ledger: PathBuf,
        /// Only these destinations (repeatable); default: every enabled one.
        #[arg(long)]
        destination: Vec<String>,
        /// Read again every 2 s until nothing is missing, for at most this many seconds.
        #[arg(long, default_value_t = 0)]
        wait: u64,
        /// How many missing ids to print per destination.
        #[arg(long, default_value_t = 10)]
        show: usize,
    },
    /// Look at the event log's cursors and drop stale ones.
    Log {
        #[arg(long, default_value = "config/sluice.yaml", global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: LogCommand,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Every destination's place in the log (position, lag, bytes it holds) and the status of
    /// its cursor: active, disabled, or stale (no destination in the config owns it).
    Cursors,
    /// Delete the cursor of a destination no longer in the config, so the log segments it holds
    /// can be deleted. Refuses ids still in the config.
    DropCursor { id: String },
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Run SCRIPT over events (--event) or check it against expected outputs (--fixtures).
    Test {
        script: PathBuf,
        /// A JSON object, a JSON array of objects, or NDJSON.
        #[arg(long, conflicts_with = "fixtures", required_unless_present = "fixtures")]
        event: Option<PathBuf>,
        /// A directory of NAME.input.json / NAME.expected.json pairs.
        #[arg(long)]
        fixtures: Option<PathBuf>,
        /// Script parameters as a JSON object (what `params:` gives in the YAML).
        #[arg(long, default_value = "{}")]
        params: String,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead-letter entries, oldest first.
    List {
        #[arg(long)]
        destination: Option<String>,
    },
    /// Print one entry with its events.
    Show { id: String },
    /// Deliver entries again through their destination; delivered entries are removed.
    Replay {
        #[arg(long)]
        destination: Option<String>,
    },
    /// Delete entries for good.
    Purge {
        #[arg(long)]
        destination: Option<String>,
    },
}

/// mimalloc instead of glibc's malloc: the router allocates and frees a few dozen small values
/// per event (Rhai maps, strings, output buffers), and glibc's malloc and free took ~15% of its
/// CPU. Measured on 2026-11-30 (BENCHMARKS.md): draining into S3 Parquet through scrub_pii was
/// faster in five of eight paired runs (by 16-41%), level in one and 3-8% slower in two; ingest
/// alone was level on batches. mimalloc v2 (feature `v2`) returns freed memory to the OS after
/// 10 ms where v3 waits a second: with no transformation at 200,000 events/s offered, v3 peaked
/// at 279 MB and v2 at 194 MB. `no_thp` keeps it off transparent huge pages (205 instead of
/// ~150 MB peak RSS while draining).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    init_logging();
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `SLUICE_LOG` sets the level (default info); `SLUICE_LOG_FORMAT=json` writes one JSON object
/// per line for log shippers. Colour codes only when stderr is a terminal: in a file or a
/// collector they are noise.
fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match std::env::var("SLUICE_LOG_FORMAT").unwrap_or_default().to_ascii_lowercase().as_str() {
        "json" => builder.json().with_current_span(false).init(),
        "" | "text" => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        other => {
            builder.with_ansi(false).init();
            tracing::warn!(format = other, "SLUICE_LOG_FORMAT is neither text nor json; writing text");
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let stdout = &mut std::io::stdout();
    match command {
        Command::Run { config, role } => {
            run::run(config::load(&config)?, role)?;
        }
        Command::Validate { config } => {
            let c = config::load(&config)?;
            println!(
                "{}: ok ({} sources, {} transformations, {} destinations)",
                config.display(),
                c.sources.len(),
                c.transformations.len(),
                c.destinations.len()
            );
        }
        Command::Transform { command: TransformCommand::Test { script, event, fixtures, params } } => {
            let input = match (&fixtures, &event) {
                (Some(dir), _) => transform_cmd::Input::Fixtures(dir),
                (None, Some(file)) => transform_cmd::Input::Events(file),
                (None, None) => anyhow::bail!("give --event FILE or --fixtures DIR"),
            };
            if !transform_cmd::test(&script, input, &params, stdout)? {
                return Ok(ExitCode::from(1));
            }
        }
        Command::Log { config, command } => {
            let c = config::load(&config)?;
            match command {
                LogCommand::Cursors => {
                    log_cmd::cursors(&c, stdout)?;
                }
                LogCommand::DropCursor { id } => {
                    let dropped = log_cmd::drop_cursor(&c, &id)?;
                    println!(
                        "dropped cursor {id} (position {}, {} events behind, holding {} bytes); a running sluice frees those segments at its next commit",
                        dropped.position.unwrap_or(0),
                        dropped.lag,
                        dropped.held_bytes
                    );
                }
            }
        }
        Command::Dlq { config, command } => {
            let c = config::load(&config)?;
            match command {
                DlqCommand::List { destination } => {
                    dlq_cmd::list(&c, destination.as_deref(), stdout)?;
                }
                DlqCommand::Show { id } => dlq_cmd::show(&c, &id, stdout)?,
                DlqCommand::Replay { destination } => {
                    let done = dlq_cmd::replay(&c, destination.as_deref(), true)?;
                    let failed = done.failed;
                    if done.filtered > 0 {
                        println!(
                            "replayed {} events; {} events not delivered: the destination's sources/filter no longer take them; {failed} entries failed and were kept",
                            done.replayed, done.filtered
                        );
                    } else {
                        println!("replayed {} events; {failed} entries failed and were kept", done.replayed);
                    }
                    if failed > 0 {
                        return Ok(ExitCode::from(1));
                    }
                }
                DlqCommand::Purge { destination } => {
                    println!("purged {} entries", dlq_cmd::purge(&c, destination.as_deref())?);
                }
            }
        }
        Command::Reconcile { config, ledger, destination, wait, show } => {
            let c = config::load(&config)?;
            let options = reconcile::Options {
                ledger: &ledger,
                destinations: &destination,
                wait: std::time::Duration::from_secs(wait),
                show,
            };
            if !reconcile::run(&c, &options, stdout)? {
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
