//! The `snowflake` destination: events loaded the way a data team loads them, through staged
//! files, `COPY INTO` and `MERGE` on `id`.
//!
//! Guarantees:
//! - **No duplicates.** Every row is merged on `id` (the event's `messageId`; the user id in
//!   `users`), so a batch loaded twice, or retried after a partial failure, leaves one row per id.
//! - **The schema follows the events.** Tables are created on first sight and a new property
//!   becomes `ALTER TABLE .. ADD COLUMN`; a column's type is never changed. A value that does not
//!   fit its column goes to the `discards` table and the rest of the row loads.
//! - **Failures are classified once** (see `client.rs`): the router retries temporary ones and
//!   dead-letters permanent ones; events that cannot be placed in any table (no `messageId`,
//!   unknown `type`) are reported in [`Delivered::rejected`] while the rest of the batch loads.
//!
//! Table schemas are cached in memory (one `information_schema` query at start), updated by our
//! own CREATE/ALTER statements and dropped on any failed load, so that a table changed behind our
//! back is re-read. Loads of one destination run one at a time.
//! See `docs/snowflake.md` for the YAML, the table layout and the evolution rules.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{SecondsFormat, Utc};
use reqwest_middleware::ClientWithMiddleware;
use snowflake_api::SnowflakeApiBuilder;

mod client;
mod config;
mod load;
mod plan;
mod rows;
pub mod schema;
pub mod stage;

pub use config::{default_discards_table, AuthConfig, Secret, SnowflakeConfig, StageConfig};

use client::Warehouse;
use load::Names;
use plan::{Schemas, TablePlan};
use schema::{quote, ColumnType};
use stage::{FileStore, StagedFile};

use crate::{Batch, Delivered, DeliveryError, Destination};

/// Loads batches into Snowflake.
pub struct SnowflakeDestination {
    config: SnowflakeConfig,
    warehouse: Warehouse,
    /// Where files are written; `None` for the internal stage (PUT through the session).
    files: Option<FileStore>,
    names: Names,
    /// Qualified, quoted stage name (`"DB"."SCHEMA"."STAGE"`).
    stage_name: String,
    /// `None` until read from `information_schema`, and again after a failed load.
    schemas: Mutex<Option<Schemas>>,
    /// Whether the schema and the stage have been created (once per process).
    prepared: AtomicBool,
    /// One load at a time: concurrent ALTERs and MERGEs on the same table would only race.
    load_lock: tokio::sync::Mutex<()>,
}

impl SnowflakeDestination {
    /// Builds the destination with snowflake-api's own HTTP client (the production path).
    pub async fn new(config: SnowflakeConfig) -> Result<Self, DeliveryError> {
        Self::build(config, None).await
    }

    /// Builds the destination on a caller's HTTP client (a proxy, custom TLS, or a test server
    /// standing in for Snowflake); everything else is the same as [`SnowflakeDestination::new`].
    pub async fn with_client(config: SnowflakeConfig, client: ClientWithMiddleware) -> Result<Self, DeliveryError> {
        Self::build(config, Some(client)).await
    }

    async fn build(config: SnowflakeConfig, client: Option<ClientWithMiddleware>) -> Result<Self, DeliveryError> {
        config.validate().map_err(DeliveryError::Config)?;
        let auth = config.auth_args().map_err(DeliveryError::Config)?;
        if let snowflake_api::AuthType::Certificate(cert) = &auth.auth_type {
            // snowflake-api would only find a bad key at the first login, deep in the router's retries.
            snowflake_jwt::generate_jwt_token(&cert.private_key_pem, "CHECK.KEY")
                .map_err(|e| DeliveryError::Config(format!("auth: unusable private key: {e}")))?;
        }
        let mut builder = SnowflakeApiBuilder::new(auth);
        if let Some(client) = client {
            builder = builder.with_client(client);
        }
        let api = builder.build().map_err(|e| DeliveryError::Config(format!("snowflake client: {e}")))?;
        let names = Names::new(&config.database, &config.schema);
        let stage_name = names.table(config.stage.name());
        let files = FileStore::open(&config.stage, Duration::from_secs(config.timeout_secs)).await?;
        Ok(SnowflakeDestination {
            warehouse: Warehouse::new(api),
            files,
            names,
            stage_name,
            schemas: Mutex::new(None),
            prepared: AtomicBool::new(false),
            load_lock: tokio::sync::Mutex::new(()),
            config,
        })
    }

    async fn prepare(&self) -> Result<(), DeliveryError> {
        if self.prepared.load(Ordering::Acquire) {
            return Ok(());
        }
        self.warehouse.exec(&load::create_schema_sql(&self.names)).await?;
        if let Some(sql) = stage::create_sql(&self.config.stage, &self.stage_name) {
            self.warehouse.exec(&sql).await?;
        }
        self.prepared.store(true, Ordering::Release);
        Ok(())
    }

    /// The known schemas, read from `information_schema` when not cached.
    async fn schemas(&self) -> Result<Schemas, DeliveryError> {
        if let Some(cached) = self.schemas.lock().unwrap().clone() {
            return Ok(cached);
        }
        let sql = format!(
            "SELECT table_name, column_name, data_type, numeric_scale FROM {}.information_schema.columns \
             WHERE UPPER(table_schema) = '{}'",
            quote(&self.config.database),
            self.config.schema.to_ascii_uppercase()
        );
        let mut schemas = Schemas::new();
        for row in self.warehouse.query(&sql).await? {
            let cell = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
            let scale = cell(3).parse::<i64>().ok();
            schemas
                .entry(cell(0).to_ascii_lowercase())
                .or_default()
                .insert(cell(1).to_ascii_lowercase(), ColumnType::from_information_schema(&cell(2), scale));
        }
        *self.schemas.lock().unwrap() = Some(schemas.clone());
        Ok(schemas)
    }

    fn remember(&self, table: &str, columns: &[(String, ColumnType)]) {
        if let Some(schemas) = self.schemas.lock().unwrap().as_mut() {
            let known = schemas.entry(table.to_string()).or_insert_with(BTreeMap::new);
            for (c, t) in columns {
                known.insert(c.clone(), t.clone());
            }
        }
    }

    /// Creates the table or adds its new columns.
    async fn evolve(&self, table: &TablePlan) -> Result<(), DeliveryError> {
        if table.create {
            self.warehouse.exec(&load::create_table_sql(&self.names, &table.table, &table.columns)).await?;
            self.remember(&table.table, &table.columns);
        } else {
            for (column, ty) in &table.new_columns {
                tracing::info!(table = %table.table, column, r#type = ty.sql(), "adding column");
                self.warehouse.exec(&load::add_column_sql(&self.names, &table.table, column, ty)).await?;
                self.remember(&table.table, &[(column.clone(), ty.clone())]);
            }
        }
        Ok(())
    }

    async fn upload(&self, dir: &str, files: Vec<StagedFile>) -> Result<(), DeliveryError> {
        match &self.files {
            Some(store) => store.upload(dir, files).await,
            None => stage::put_internal(&self.warehouse, &self.stage_name, dir, files).await,
        }
    }

    /// Failures are only logged: the data is loaded, and a leftover directory is never read again.
    async fn remove_staged(&self, dir: &str, names: &[String]) {
        let result = match &self.files {
            Some(store) => store.remove(dir, names).await,
            None => self.warehouse.exec(&format!("REMOVE @{}/{dir}/", self.stage_name)).await.map_err(|e| e.to_string()),
        };
        if let Err(error) = result {
            tracing::warn!(%error, dir, "could not remove staged files after the load");
        }
    }

    /// Stages one table's rows and merges them into it.
    async fn load_table(&self, batch: &Batch, table: &TablePlan) -> Result<(), DeliveryError> {
        if table.rows.is_empty() {
            return Ok(());
        }
        let files = tokio::task::block_in_place(|| {
            load::encode_files(&table.rows, self.config.max_file_bytes, self.config.gzip_level)
        })?;
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let attempt = nonce();
        let dir = format!(
            "{}/{}/{}-{attempt}",
            schema::to_identifier(&batch.destination),
            table.table,
            batch.span_name(batch.first_offset(), batch.last_offset()),
        );
        self.upload(&dir, files).await?;
        let result = async {
            let t = &table.table;
            self.warehouse.exec(&load::create_staging_sql(&self.names, t, &attempt)).await?;
            self.warehouse.exec(&load::copy_sql(&self.names, t, &attempt, &self.stage_name, &dir)).await?;
            let upsert = t == "users";
            self.warehouse.exec(&load::merge_sql(&self.names, t, &attempt, &table.columns, upsert)).await
        }
        .await;
        // Dropped on failure too, so failed attempts leave no tables behind.
        if let Err(error) = self.warehouse.exec(&load::drop_staging_sql(&self.names, &table.table, &attempt)).await {
            tracing::warn!(%error, "could not drop a staging table");
        }
        self.remove_staged(&dir, &names).await;
        result
    }

    async fn load(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        self.prepare().await?;
        let known = self.schemas().await?;
        let uuid_ts = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        let plan = tokio::task::block_in_place(|| plan::plan(&batch.events, &known, &uuid_ts, &self.config.discards_table));
        for table in &plan.tables {
            self.evolve(table).await?;
        }
        for table in &plan.tables {
            self.load_table(batch, table).await?;
        }
        let discarded = plan.tables.iter().find(|t| t.table == self.config.discards_table).map_or(0, |t| t.rows.len());
        tracing::debug!(
            destination = %batch.destination,
            events = batch.events.len(),
            tables = plan.tables.len(),
            discarded,
            rejected = plan.rejected.len(),
            "snowflake load done"
        );
        Ok(Delivered { rejected: plan.rejected })
    }
}

/// The tables that hold one row per event: every event lands in exactly one of them (a track
/// also gets a row in its event's own table, which would count it twice).
pub const EVENT_TABLES: [&str; 6] = ["tracks", "identifies", "pages", "screens", "groups", "aliases"];

impl SnowflakeDestination {
    /// Every `id` (the events' `messageId`) in the per-type event tables, read back for
    /// `sluice reconcile`. Tables that do not exist yet are skipped.
    pub async fn landed_ids(&self) -> Result<crate::LandedIds, DeliveryError> {
        let known = self.schemas().await?;
        let mut ids = crate::LandedIds::default();
        for table in EVENT_TABLES {
            if !known.contains_key(table) {
                continue;
            }
            for row in self.warehouse.query(&format!("SELECT id FROM {}", self.names.table(table))).await? {
                match row.into_iter().next().flatten() {
                    Some(id) => ids.push(&id),
                    None => ids.without_id += 1,
                }
            }
            ids.objects += 1;
        }
        Ok(ids)
    }
}

/// Distinguishes load attempts of the same batch (see `stage.rs`).
fn nonce() -> String {
    // The process id keeps two sluice processes loading into one schema apart.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}{:x}", std::process::id(), nanos)
}

#[async_trait]
impl Destination for SnowflakeDestination {
    async fn deliver(&self, batch: &Batch) -> Result<Delivered, DeliveryError> {
        let _one_at_a_time = self.load_lock.lock().await;
        let warm = self.schemas.lock().unwrap().is_some();
        match self.load(batch).await {
            Ok(delivered) => Ok(delivered),
            Err(error) => {
                // Whatever failed, the cached state may be what is wrong (a column dropped or
                // retyped by hand, the schema or stage dropped): read and check it again.
                *self.schemas.lock().unwrap() = None;
                self.prepared.store(false, Ordering::Release);
                if warm && !error.is_retriable() {
                    tracing::warn!(%error, "snowflake load failed with cached schemas; retrying once with fresh ones");
                    let retried = self.load(batch).await;
                    if retried.is_err() {
                        *self.schemas.lock().unwrap() = None;
                        self.prepared.store(false, Ordering::Release);
                    }
                    return retried;
                }
                Err(error)
            }
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs)
    }
}
