//! The `snowflake` sink's YAML. Secrets arrive already interpolated from `${VAR}` by the config
//! loader; nothing here reads the environment.

use std::path::PathBuf;

use serde::Deserialize;
use snowflake_api::{AuthArgs, AuthType, CertificateArgs, PasswordArgs};

/// Settings of a `snowflake` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnowflakeConfig {
    /// Account identifier, e.g. `myorg-myaccount` or `xy12345.eu-central-1`.
    pub account: String,
    /// Login name of the loading user.
    pub user: String,
    /// How the user authenticates.
    pub auth: AuthConfig,
    /// Warehouse that runs the COPY and MERGE statements.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Database of the tables. Must exist.
    pub database: String,
    /// Schema of the tables; created if missing.
    pub schema: String,
    /// Role to load with (the user's default role if unset).
    #[serde(default)]
    pub role: Option<String>,
    /// Where batch files are staged before `COPY INTO`.
    pub stage: StageConfig,
    /// Largest uncompressed NDJSON file staged per table and batch; bigger loads are split into
    /// several files, which Snowflake loads in parallel.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: usize,
    /// Gzip level of staged files, 0 (none) to 9 (smallest).
    #[serde(default = "default_gzip_level")]
    pub gzip_level: u32,
    /// Longest one batch's load may take before the router counts it as timed out (seconds).
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// Table for values that do not fit their column. `rudder_discards` by default, the name
    /// RudderStack's warehouse layout uses (dbt projects written for it exclude that table).
    #[serde(default = "default_discards_table")]
    pub discards_table: String,
}

/// The discards table's default name (RudderStack's).
pub fn default_discards_table() -> String {
    "rudder_discards".into()
}

/// How the loading user signs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// User and password.
    Password { password: Secret },
    /// Key-pair authentication: an unencrypted PKCS#8 PEM private key whose public key is set on
    /// the user (`ALTER USER .. SET RSA_PUBLIC_KEY = ..`), given inline or as a file.
    KeyPair {
        #[serde(default)]
        private_key: Option<Secret>,
        #[serde(default)]
        private_key_path: Option<PathBuf>,
    },
}

/// A secret from the config; `{:?}` prints `<redacted>` so that it never reaches a log.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where staged files go. Every load attempt writes a directory of its own, named by
/// destination, table, batch offsets and an attempt nonce (see `stage.rs`): a retry never loads
/// an earlier attempt's files, and the MERGE on `id` keeps it from duplicating rows.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    /// An external stage on S3: sluice uploads with the AWS SDK (credentials from the usual AWS
    /// chain: env, profile, instance role) and Snowflake reads through the stage.
    S3 {
        /// Name of the Snowflake stage (in `database.schema`) whose URL is `s3://{bucket}/{prefix}`.
        name: String,
        bucket: String,
        #[serde(default)]
        prefix: String,
        region: String,
        /// Custom S3 endpoint (MinIO, a test server). Path-style addressing is used with it.
        #[serde(default)]
        endpoint: Option<String>,
        /// If set, sluice creates the stage when missing, with this storage integration.
        #[serde(default)]
        storage_integration: Option<String>,
        /// Static credentials for the upload; the AWS chain (env, profile, instance role) if unset.
        #[serde(default)]
        access_key_id: Option<String>,
        #[serde(default)]
        secret_access_key: Option<Secret>,
    },
    /// A directory the warehouse reads through a `file://` stage: for Snowflake-compatible
    /// engines running next to sluice (and fakesnow in tests). Real Snowflake cannot use it.
    Local {
        /// Stage name (in `database.schema`); created when missing.
        name: String,
        /// Absolute directory path, shared by sluice and the engine.
        path: PathBuf,
    },
    /// A Snowflake internal named stage, uploaded to with `PUT`. Experimental: snowflake-api 0.14
    /// only uploads to AWS-hosted accounts, and this path is not covered by the test suite.
    Internal {
        /// Stage name (in `database.schema`); created when missing.
        name: String,
    },
}

impl StageConfig {
    pub fn name(&self) -> &str {
        match self {
            StageConfig::S3 { name, .. } | StageConfig::Local { name, .. } | StageConfig::Internal { name } => name,
        }
    }
}

fn default_max_file_bytes() -> usize {
    100 * 1024 * 1024
}

fn default_gzip_level() -> u32 {
    crate::DEFAULT_GZIP_LEVEL
}

fn default_timeout_secs() -> u64 {
    300
}

/// Config names used in SQL (database, schema, stage, ...): plain Snowflake identifiers, which
/// are case-insensitive, so sluice can quote their upper-case form.
fn check_name(what: &str, value: &str) -> Result<(), String> {
    let ok = value.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        && value.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {value:?} must be a plain identifier ([A-Za-z_][A-Za-z0-9_$]*)"))
    }
}

impl SnowflakeConfig {
    /// Checks that need no I/O.
    pub fn validate(&self) -> Result<(), String> {
        if self.account.trim().is_empty() {
            return Err("account must not be empty".into());
        }
        if self.user.trim().is_empty() {
            return Err("user must not be empty".into());
        }
        check_name("database", &self.database)?;
        check_name("schema", &self.schema)?;
        check_name("stage name", self.stage.name())?;
        if let Some(w) = &self.warehouse {
            check_name("warehouse", w)?;
        }
        if let Some(r) = &self.role {
            check_name("role", r)?;
        }
        match &self.auth {
            AuthConfig::Password { password } if password.0.is_empty() => {
                return Err("auth.password must not be empty".into())
            }
            AuthConfig::KeyPair { private_key, private_key_path } => {
                match (private_key, private_key_path) {
                    (Some(_), Some(_)) => {
                        return Err("auth: set private_key or private_key_path, not both".into())
                    }
                    (None, None) => return Err("auth: key_pair needs private_key or private_key_path".into()),
                    (Some(pem), None) if !pem.0.contains("PRIVATE KEY-----") => {
                        return Err("auth.private_key is not a PEM private key".into())
                    }
                    _ => {}
                }
            }
            AuthConfig::Password { .. } => {}
        }
        match &self.stage {
            StageConfig::Local { path, .. } if !path.is_absolute() => {
                return Err(format!("stage.path must be absolute, got {}", path.display()))
            }
            StageConfig::S3 { bucket, region, storage_integration, .. } => {
                if bucket.is_empty() || region.is_empty() {
                    return Err("stage: s3 needs bucket and region".into());
                }
                if let Some(i) = storage_integration {
                    check_name("stage.storage_integration", i)?;
                }
            }
            _ => {}
        }
        if self.max_file_bytes < 1024 {
            return Err(format!("max_file_bytes must be at least 1024, got {}", self.max_file_bytes));
        }
        crate::check_gzip_level(self.gzip_level)?;
        if super::schema::to_identifier(&self.discards_table) != self.discards_table {
            return Err(format!(
                "discards_table {:?} must be a lower-case warehouse name ([a-z_][a-z0-9_]*, not a reserved word)",
                self.discards_table
            ));
        }
        Ok(())
    }

    /// What snowflake-api needs to open a session; reads the key file if one is configured.
    pub fn auth_args(&self) -> Result<AuthArgs, String> {
        let auth_type = match &self.auth {
            AuthConfig::Password { password } => AuthType::Password(PasswordArgs { password: password.0.clone() }),
            AuthConfig::KeyPair { private_key: Some(pem), .. } => {
                AuthType::Certificate(CertificateArgs { private_key_pem: pem.0.clone() })
            }
            AuthConfig::KeyPair { private_key_path: Some(path), .. } => {
                let pem = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read private key {}: {e}", path.display()))?;
                AuthType::Certificate(CertificateArgs { private_key_pem: pem })
            }
            AuthConfig::KeyPair { .. } => return Err("auth: key_pair needs a private key".into()),
        };
        Ok(AuthArgs {
            account_identifier: self.account.clone(),
            warehouse: self.warehouse.clone(),
            database: Some(self.database.clone()),
            schema: Some(self.schema.clone()),
            username: self.user.clone(),
            role: self.role.clone(),
            auth_type,
        })
    }
}
