//! The SQL of a load and the staged files' encoding. Pure functions, so the statements can be
//! read (and unit-tested) without a warehouse.
//!
//! One table's load is: stage gzip NDJSON files (one JSON object per row, keys = column names)
//! -> `COPY INTO` a transient one-column VARIANT staging table -> `MERGE` into the target on `id`,
//! casting each key to its column's type. Event tables only insert ids they do not have, so a
//! repeated load changes nothing; `users` also updates matched rows, keeping the newest value
//! of each trait (by `received_at`) and never erasing a trait with a NULL.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use super::rows::Row;
use super::schema::{quote, ColumnType};
use super::stage::StagedFile;

/// `"DB"."SCHEMA"` and the names qualified in it.
#[derive(Debug, Clone)]
pub struct Names {
    pub schema: String,
}

impl Names {
    pub fn new(database: &str, schema: &str) -> Names {
        Names { schema: format!("{}.{}", quote(database), quote(schema)) }
    }

    pub fn table(&self, table: &str) -> String {
        format!("{}.{}", self.schema, quote(table))
    }

    /// The staging table of one load attempt (`attempt` is unique per attempt, so two loaders
    /// never share one). Transient: no fail-safe storage is paid for rows that live seconds.
    pub fn staging(&self, table: &str, attempt: &str) -> String {
        self.table(&format!("_sluice_stg_{table}_{attempt}"))
    }
}

pub fn create_schema_sql(names: &Names) -> String {
    format!("CREATE SCHEMA IF NOT EXISTS {}", names.schema)
}

pub fn create_table_sql(names: &Names, table: &str, columns: &[(String, ColumnType)]) -> String {
    let cols: Vec<String> = columns.iter().map(|(c, t)| format!("{} {}", quote(c), t.sql())).collect();
    format!("CREATE TABLE IF NOT EXISTS {} ({})", names.table(table), cols.join(", "))
}

pub fn add_column_sql(names: &Names, table: &str, column: &str, ty: &ColumnType) -> String {
    format!("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}", names.table(table), quote(column), ty.sql())
}

pub fn create_staging_sql(names: &Names, table: &str, attempt: &str) -> String {
    format!("CREATE OR REPLACE TRANSIENT TABLE {} (v VARIANT)", names.staging(table, attempt))
}

pub fn drop_staging_sql(names: &Names, table: &str, attempt: &str) -> String {
    format!("DROP TABLE IF EXISTS {}", names.staging(table, attempt))
}

/// COPY of one attempt's directory. Directory and staging table are new per attempt, so COPY's
/// memory of loaded files never skips a file and `FORCE` is not needed.
pub fn copy_sql(names: &Names, table: &str, attempt: &str, stage: &str, dir: &str) -> String {
    format!(
        "COPY INTO {} FROM @{stage}/{dir}/ FILE_FORMAT = (TYPE = JSON COMPRESSION = GZIP)",
        names.staging(table, attempt)
    )
}

fn cast(column: &str, ty: &ColumnType) -> String {
    let path = format!("v:\"{}\"", column.replace('"', ""));
    match ty {
        ColumnType::Variant => path,
        other => format!("{path}::{}", other.sql()),
    }
}

/// The MERGE of a staged table into its target. `upsert` is for `users`.
pub fn merge_sql(names: &Names, table: &str, attempt: &str, columns: &[(String, ColumnType)], upsert: bool) -> String {
    let select: Vec<String> = columns.iter().map(|(c, t)| format!("{} AS {}", cast(c, t), quote(c))).collect();
    let insert_cols: Vec<String> = columns.iter().map(|(c, _)| quote(c)).collect();
    let insert_vals: Vec<String> = columns.iter().map(|(c, _)| format!("s.{}", quote(c))).collect();
    let mut sql = format!(
        "MERGE INTO {} AS t USING (SELECT {} FROM {}) AS s ON t.\"ID\" = s.\"ID\"",
        names.table(table),
        select.join(", "),
        names.staging(table, attempt),
    );
    if upsert {
        // Newer (or equally new: a retry) rows win column by column; an older row only fills
        // columns the table has no value for yet. NULL means "not sent", never "erase".
        let newer = "(t.\"RECEIVED_AT\" IS NULL OR s.\"RECEIVED_AT\" >= t.\"RECEIVED_AT\")";
        let sets: Vec<String> = columns
            .iter()
            .filter(|(c, _)| c != "id")
            .map(|(c, _)| {
                let q = quote(c);
                format!("{q} = CASE WHEN {newer} THEN COALESCE(s.{q}, t.{q}) ELSE COALESCE(t.{q}, s.{q}) END")
            })
            .collect();
        if !sets.is_empty() {
            sql.push_str(&format!(" WHEN MATCHED THEN UPDATE SET {}", sets.join(", ")));
        }
    }
    sql.push_str(&format!(
        " WHEN NOT MATCHED THEN INSERT ({}) VALUES ({})",
        insert_cols.join(", "),
        insert_vals.join(", ")
    ));
    sql
}

/// Gzip NDJSON files of at most about `max_bytes` uncompressed each.
pub fn encode_files(rows: &[Row], max_bytes: usize, gzip_level: u32) -> std::io::Result<Vec<StagedFile>> {
    let mut files = Vec::new();
    let mut current = GzEncoder::new(Vec::new(), Compression::new(gzip_level));
    let mut current_bytes = 0usize;
    for row in rows {
        let line = serde_json::to_vec(row)?;
        if current_bytes > 0 && current_bytes + line.len() + 1 > max_bytes {
            let done = std::mem::replace(&mut current, GzEncoder::new(Vec::new(), Compression::new(gzip_level)));
            files.push(StagedFile { name: format!("part-{:05}.ndjson.gz", files.len()), bytes: done.finish()? });
            current_bytes = 0;
        }
        current.write_all(&line)?;
        current.write_all(b"\n")?;
        current_bytes += line.len() + 1;
    }
    if current_bytes > 0 {
        files.push(StagedFile { name: format!("part-{:05}.ndjson.gz", files.len()), bytes: current.finish()? });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_inserts_missing_ids_and_upserts_users() {
        let names = Names::new("db", "sch");
        let cols = vec![("id".to_string(), ColumnType::Text), ("plan".to_string(), ColumnType::Text)];
        let sql = merge_sql(&names, "tracks", "1", &cols, false);
        assert!(sql.starts_with("MERGE INTO \"DB\".\"SCH\".\"TRACKS\" AS t USING (SELECT v:\"id\"::VARCHAR AS \"ID\""), "{sql}");
        assert!(!sql.contains("WHEN MATCHED"));
        let sql = merge_sql(&names, "users", "1", &cols, true);
        assert!(sql.contains("WHEN MATCHED THEN UPDATE SET \"PLAN\" = CASE"), "{sql}");
    }

    #[test]
    fn files_are_split_by_size() {
        let rows: Vec<Row> = (0..10).map(|i| [("id".to_string(), json!(format!("row-{i:04}")))].into()).collect();
        let files = encode_files(&rows, 60, 1).unwrap();
        assert_eq!(files.len(), 4, "about three 17-byte lines per 60-byte file");
        assert_eq!(files[0].name, "part-00000.ndjson.gz");
    }
}
