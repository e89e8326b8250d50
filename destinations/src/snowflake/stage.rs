//! Where batch files wait for `COPY INTO`: a directory behind a `file://` stage, an S3 bucket
//! behind an external stage, or a Snowflake internal stage.
//!
//! Every load attempt writes into a fresh directory (`{destination}/{table}/{offsets}-{nonce}/`)
//! and COPY reads that directory whole, so files of an earlier, failed attempt are never loaded
//! twice; deduplication itself is the MERGE's job. The directory is removed after the load.

use std::path::PathBuf;
use std::time::Duration;

use super::client::Warehouse;
use super::config::StageConfig;
use super::schema::quote;
use crate::DeliveryError;

/// One file to stage.
pub struct StagedFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Where sluice writes staged files itself. The internal stage is not one of these: its files
/// go through Snowflake's PUT ([`put_internal`]).
pub enum FileStore {
    /// A directory read through a `file://` stage.
    Local { root: PathBuf },
    /// A bucket and prefix read through an external stage.
    S3 { client: aws_sdk_s3::Client, bucket: String, prefix: String },
}

impl FileStore {
    /// Opens the store behind a `local` or `s3` stage (`None` for `internal`). Makes no request
    /// (the AWS chain may read profile files). `timeout` bounds each S3 request attempt, as in
    /// the `s3` sink, whose client builder this is.
    pub async fn open(config: &StageConfig, timeout: Duration) -> Result<Option<FileStore>, DeliveryError> {
        Ok(Some(match config {
            StageConfig::Local { path, .. } => FileStore::Local { root: path.clone() },
            StageConfig::Internal { .. } => return Ok(None),
            StageConfig::S3 { bucket, prefix, region, endpoint, access_key_id, secret_access_key, .. } => {
                let client = crate::s3::client::build(&crate::s3::client::Settings {
                    region: Some(region),
                    endpoint: endpoint.as_deref(),
                    force_path_style: endpoint.is_some(),
                    access_key_id: access_key_id.as_deref(),
                    secret_access_key: secret_access_key.as_ref().map(|s| s.0.as_str()),
                    session_token: None,
                    timeout,
                })
                .await?;
                FileStore::S3 { client, bucket: bucket.clone(), prefix: prefix.trim_matches('/').to_string() }
            }
        }))
    }

    /// The object key (or relative path) of a staged file.
    pub fn key(prefix: &str, dir: &str, name: &str) -> String {
        if prefix.is_empty() {
            format!("{dir}/{name}")
        } else {
            format!("{prefix}/{dir}/{name}")
        }
    }

    /// Writes `files` under `dir`, relative to the stage's URL.
    pub async fn upload(&self, dir: &str, files: Vec<StagedFile>) -> Result<(), DeliveryError> {
        match self {
            FileStore::Local { root } => {
                let target = root.join(dir);
                tokio::task::block_in_place(|| {
                    std::fs::create_dir_all(&target)?;
                    for file in &files {
                        std::fs::write(target.join(&file.name), &file.bytes)?;
                    }
                    Ok::<_, std::io::Error>(())
                })?;
            }
            FileStore::S3 { client, bucket, prefix } => {
                for file in files {
                    let key = Self::key(prefix, dir, &file.name);
                    client
                        .put_object()
                        .bucket(bucket)
                        .key(&key)
                        .body(file.bytes.into())
                        .send()
                        .await
                        .map_err(|e| crate::s3::client::classify("PutObject", bucket, &key, e))?;
                }
            }
        }
        Ok(())
    }

    /// Deletes what [`FileStore::upload`] wrote.
    pub async fn remove(&self, dir: &str, names: &[String]) -> Result<(), String> {
        match self {
            FileStore::Local { root } => std::fs::remove_dir_all(root.join(dir)).map_err(|e| e.to_string()),
            FileStore::S3 { client, bucket, prefix } => {
                for name in names {
                    let key = Self::key(prefix, dir, name);
                    client.delete_object().bucket(bucket).key(&key).send().await.map_err(|e| {
                        format!("delete s3://{bucket}/{key}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
                    })?;
                }
                Ok(())
            }
        }
    }
}

/// Uploads to an internal stage with PUT, which reads local files: they are written to a scratch
/// directory first. Untested: fakesnow's PUT answer is not one snowflake-api 0.14 can follow.
pub async fn put_internal(warehouse: &Warehouse, stage: &str, dir: &str, files: Vec<StagedFile>) -> Result<(), DeliveryError> {
    let scratch = std::env::temp_dir().join(format!("sluice-put-{}", dir.replace('/', "-")));
    tokio::task::block_in_place(|| {
        std::fs::create_dir_all(&scratch)?;
        for file in &files {
            std::fs::write(scratch.join(&file.name), &file.bytes)?;
        }
        Ok::<_, std::io::Error>(())
    })?;
    let put = format!("PUT 'file://{}/*' @{stage}/{dir}/ AUTO_COMPRESS = FALSE OVERWRITE = TRUE", scratch.display());
    let result = warehouse.exec(&put).await;
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// SQL for creating a stage sluice manages (`stage` is the qualified, quoted name), or `None`
/// when it must already exist (an S3 stage without `storage_integration`).
pub fn create_sql(config: &StageConfig, stage: &str) -> Option<String> {
    match config {
        StageConfig::Local { path, .. } => {
            let dir = path.to_string_lossy().trim_end_matches('/').replace('\'', "''");
            Some(format!("CREATE STAGE IF NOT EXISTS {stage} URL = 'file://{dir}/'"))
        }
        StageConfig::Internal { .. } => Some(format!("CREATE STAGE IF NOT EXISTS {stage}")),
        StageConfig::S3 { bucket, prefix, storage_integration: Some(integration), .. } => {
            let prefix = prefix.trim_matches('/');
            let slash = if prefix.is_empty() { "" } else { "/" };
            Some(format!(
                "CREATE STAGE IF NOT EXISTS {stage} URL = 's3://{bucket}/{prefix}{slash}' STORAGE_INTEGRATION = {}",
                quote(integration)
            ))
        }
        StageConfig::S3 { .. } => None,
    }
}
