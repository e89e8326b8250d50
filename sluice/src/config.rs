//! Loading the YAML config: `${VAR}` / `${VAR:-default}` interpolation, parsing with unknown keys
//! refused, then checks that need no I/O. `sluice validate` is exactly this function.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_collector::{CollectorConfig, SourceConfig};
use sluice_eventlog::LogConfig;
use sluice_kafka::KafkaConfig;
use sluice_router::{AlertsConfig, DestinationConfig};
use sluice_transformer::TransformationConfig;

/// The whole `sluice.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Root of everything Sluice stores: the log (`log/`), dead letters (`dead_letters/`).
    pub data_dir: PathBuf,
    pub collector: CollectorConfig,
    #[serde(default = "default_log")]
    pub log: LogSection,
    pub sources: Vec<SourceConfig>,
    #[serde(default)]
    pub transformations: Vec<TransformationConfig>,
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    #[serde(default)]
    pub alerts: Option<AlertsConfig>,
    /// The operators' listener; absent means the defaults (127.0.0.1:9180, no token).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
}

/// `admin:` in the YAML: where `/metrics`, `/health`, `/ready` and the dashboard are served. Kept
/// off the collector's port, which faces the internet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address the admin listener binds.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// Name of the environment variable holding a bearer token that `/metrics`, `/ready` and the
    /// dashboard's data then require. The token itself never appears in the YAML, so it cannot
    /// leak through the config file, `sluice validate` or a debug print.
    #[serde(default)]
    pub token_env: Option<String>,
}

pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9180";

fn default_admin_listen() -> String {
    DEFAULT_ADMIN_LISTEN.to_string()
}

impl AdminConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("listen {:?} is not an address like 127.0.0.1:9180: {e}", self.listen))?;
        if let Some(var) = &self.token_env {
            if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("token_env must name an environment variable, got {var:?}"));
            }
        }
        Ok(())
    }
}

/// `log:` in the YAML: which backend holds the event log, and its settings. The embedded log's
/// keys stay at this level (as before there was a choice), so every existing config still loads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    #[serde(default)]
    pub backend: Backend,
    /// Embedded: directory of segments and cursors; empty means `<data_dir>/log`.
    #[serde(default)]
    pub dir: PathBuf,
    #[serde(default)]
    pub segment_bytes: Option<u64>,
    #[serde(default)]
    pub disk_budget_bytes: Option<u64>,
    /// Kafka: brokers, topic, partitions and replication for auto-creation, client settings.
    #[serde(default)]
    pub kafka: Option<KafkaConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The append-only log on this machine's disk (one process).
    #[default]
    Embedded,
    /// A Kafka topic (collectors and routers as separate, scaled-out processes).
    Kafka,
}

impl LogSection {
    /// The embedded log's settings (defaults where the YAML has none).
    pub fn embedded(&self) -> LogConfig {
        let mut c = LogConfig::new(self.dir.clone());
        if let Some(b) = self.segment_bytes {
            c.segment_bytes = b;
        }
        if let Some(b) = self.disk_budget_bytes {
            c.disk_budget_bytes = b;
        }
        c
    }

    fn validate(&self) -> Result<(), String> {
        match self.backend {
            Backend::Embedded => {
                if self.kafka.is_some() {
                    return Err("kafka: settings are given but backend is embedded (set backend: kafka to use them)".into());
                }
                self.embedded().validate()
            }
            Backend::Kafka => {
                if self.segment_bytes.is_some() || self.disk_budget_bytes.is_some() {
                    return Err("segment_bytes and disk_budget_bytes belong to the embedded log; with backend: kafka, retention is the topic's".into());
                }
                match &self.kafka {
                    None => Err("backend: kafka needs a kafka: block with at least brokers".into()),
                    Some(k) => k.validate(),
                }
            }
        }
    }
}

fn default_log() -> LogSection {
    LogSection { backend: Backend::Embedded, dir: PathBuf::new(), segment_bytes: None, disk_budget_bytes: None, kafka: None }
}

impl Config {
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.data_dir.join("dead_letters")
    }
}

/// A config problem, with where it is when that is known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("{file}:{line}: environment variable {var} is not set (write ${{{var}:-default}} to give a default)")]
    MissingEnv { file: String, line: usize, var: String },
    #[error("{file}: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid { file: String, line: Option<usize>, message: String },
    #[error("{0}")]
    Transform(#[from] sluice_transformer::TransformError),
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` stands for a literal `$`. Whole-line comments are
/// left alone so a commented-out example never needs its variables set.
pub fn interpolate(text: &str, file: &str, env: impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let re = regex::Regex::new(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}").expect("static regex");
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut last = 0;
        for cap in re.captures_iter(line) {
            let m = cap.get(0).unwrap();
            out.push_str(&line[last..m.start()]);
            last = m.end();
            if m.as_str() == "$$" {
                out.push('$');
                continue;
            }
            let var = &cap[1];
            match (env(var).filter(|v| !v.is_empty()), cap.get(2)) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(default)) => out.push_str(default.as_str()),
                (None, None) => return Err(ConfigError::MissingEnv { file: file.into(), line: n + 1, var: var.into() }),
            }
        }
        out.push_str(&line[last..]);
    }
    Ok(out)
}

/// Reads, interpolates, parses and validates `path`, compiling the transformation scripts too.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read { file: file.clone(), message: e.to_string() })?;
    parse(&text, &file, |v| std::env::var(v).ok())
}

pub fn parse(text: &str, file: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let text = interpolate(text, file, env)?;
    // serde_yaml's message names the key path and the line and column.
    let mut config: Config =
        serde_yaml::from_str(&text).map_err(|e| ConfigError::Yaml { file: file.into(), message: e.to_string() })?;
    if config.log.dir.as_os_str().is_empty() {
        config.log.dir = config.data_dir.join("log");
    }
    validate(&config, &text, file)?;
    Ok(config)
}

fn invalid(file: &str, text: &str, needle: Option<&str>, message: String) -> ConfigError {
    ConfigError::Invalid { file: file.into(), line: needle.and_then(|n| line_of(text, n)), message }
}

/// 1-based line of the first line containing `needle` (to point at the offending entry).
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

fn validate(config: &Config, text: &str, file: &str) -> Result<(), ConfigError> {
    config.collector.validate().map_err(|m| invalid(file, text, Some("listen:"), format!("collector: {m}")))?;
    config.log.validate().map_err(|m| invalid(file, text, Some("log:"), format!("log: {m}")))?;
    if let Some(admin) = &config.admin {
        admin.validate().map_err(|m| invalid(file, text, Some("admin:"), format!("admin: {m}")))?;
        if admin.listen == config.collector.listen {
            return Err(invalid(file, text, Some("admin:"), "admin: listen must differ from collector.listen".into()));
        }
    }
    if config.sources.is_empty() {
        return Err(invalid(file, text, Some("sources:"), "sources: at least one source is needed".into()));
    }
    sluice_collector::validate_sources(&config.sources).map_err(|(i, m)| {
        invalid(file, text, Some(&format!("id: {}", config.sources[i].id)), format!("sources: {m}"))
    })?;
    let ids: HashSet<&str> = config.sources.iter().map(|s| s.id.as_str()).collect();
    let transforms: HashSet<&str> = config.transformations.iter().map(|t| t.id.as_str()).collect();
    if transforms.len() != config.transformations.len() {
        return Err(invalid(file, text, Some("transformations:"), "transformations: an id is used twice".into()));
    }
    let mut dest_ids = HashSet::new();
    for d in &config.destinations {
        let at = format!("id: {}", d.id);
        d.validate().map_err(|m| invalid(file, text, Some(&at), format!("destinations: {m}")))?;
        if !dest_ids.insert(d.id.as_str()) {
            return Err(invalid(file, text, Some(&at), format!("destinations: id {:?} is used twice", d.id)));
        }
        for s in &d.sources {
            if !ids.contains(s.as_str()) {
                return Err(invalid(
                    file,
                    text,
                    Some(&at),
                    format!("destinations: {} takes source {s:?}, which is not defined under sources:", d.id),
                ));
            }
        }
        for t in &d.transformations {
            if !transforms.contains(t.as_str()) {
                return Err(invalid(
                    file,
                    text,
                    Some(&at),
                    format!("destinations: {} uses transformation {t:?}, which is not defined under transformations:", d.id),
                ));
            }
        }
    }
    // Compiling every script here makes a syntax error a start-up error with file and line.
    let errors = sluice_transformer::Registry::check(&config.transformations);
    if let Some(first) = errors.into_iter().next() {
        return Err(first.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod log_tests;
