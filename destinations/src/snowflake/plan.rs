//! A batch's load plan, computed without I/O from the events and the known table schemas: the
//! rows of each table (deduplicated on `id`), the columns to create, and the values that do not
//! fit their column's type (moved to the discards table).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::rows::{discards_columns, event_rows, fixed_columns, Row};
use super::schema::ColumnType;
#[cfg(test)]
use super::schema::DISCARDS_TABLE;
use crate::OutEvent;

/// Known columns per table (lower-case names), as read from `information_schema` and kept up to
/// date by our own CREATE and ALTER statements.
pub type Schemas = HashMap<String, BTreeMap<String, ColumnType>>;

/// What to do with one table.
#[derive(Debug)]
pub struct TablePlan {
    pub table: String,
    /// The table does not exist yet: create it with `columns`.
    pub create: bool,
    /// Columns to add with `ALTER TABLE` (empty when `create`).
    pub new_columns: Vec<(String, ColumnType)>,
    /// Every column this load writes, with its type (the MERGE's column list).
    pub columns: Vec<(String, ColumnType)>,
    /// Rows ready to be staged: values already coerced to their column's type, one row per id.
    pub rows: Vec<Row>,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// In first-seen order, the discards table last.
    pub tables: Vec<TablePlan>,
    /// Events that could not be placed in any table (index into the batch, reason).
    pub rejected: Vec<(usize, String)>,
}

/// Plans the load of `events`. `uuid_ts` is the load time written to every row; values that do
/// not fit go to the table named `discards`.
pub fn plan(events: &[OutEvent], known: &Schemas, uuid_ts: &str, discards_table: &str) -> Plan {
    let mut out = Plan::default();
    let mut order: Vec<String> = Vec::new();
    let mut by_table: HashMap<String, Vec<Row>> = HashMap::new();
    for (index, event) in events.iter().enumerate() {
        let rows = serde_json::from_slice::<Value>(&event.json)
            .map_err(|e| format!("event is not valid JSON: {e}"))
            .and_then(|v| event_rows(&v, uuid_ts));
        match rows {
            Ok(rows) => {
                for (mut table, row) in rows.rows {
                    // An event named like the discards table must not write into it.
                    if table == discards_table {
                        table = format!("_{table}");
                    }
                    if !by_table.contains_key(&table) {
                        order.push(table.clone());
                    }
                    by_table.entry(table).or_default().push(row);
                }
            }
            Err(reason) => out.rejected.push((index, reason)),
        }
    }

    let mut discards: Vec<Row> = Vec::new();
    for table in order {
        let rows = dedup(&table, by_table.remove(&table).unwrap_or_default());
        let fixed = fixed_columns(&table);
        out.tables.push(plan_table(&table, fixed, rows, known, uuid_ts, &mut discards));
    }
    if !discards.is_empty() {
        let rows = dedup(discards_table, discards);
        let mut none = Vec::new();
        out.tables.push(plan_table(discards_table, discards_columns(), rows, known, uuid_ts, &mut none));
    }
    out
}

/// One row per id. For `users` the rows of one user are merged in log order, so the latest value
/// of each trait wins and traits sent earlier in the batch are kept; for event tables a repeated
/// id is the same event delivered twice, and the first copy is kept.
fn dedup(table: &str, rows: Vec<Row>) -> Vec<Row> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row.get("id").map(|v| v.to_string()).unwrap_or_default();
        match index.get(&id) {
            Some(&i) if table == "users" => out[i].extend(row),
            Some(_) => {}
            None => {
                index.insert(id, out.len());
                out.push(row);
            }
        }
    }
    out
}

fn plan_table(
    table: &str,
    fixed_cols: Vec<(&'static str, ColumnType)>,
    mut rows: Vec<Row>,
    known: &Schemas,
    uuid_ts: &str,
    discards: &mut Vec<Row>,
) -> TablePlan {
    let existing = known.get(table);
    let fixed: BTreeMap<&str, ColumnType> = fixed_cols.iter().cloned().collect();

    // The type of every column this batch writes: the table's if it has the column, else the
    // fixed one, else inferred from the batch's values in log order.
    let mut types: BTreeMap<String, ColumnType> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    // Fixed columns are always written (NULL when absent): a new table gets them all, a table
    // created by hand without some gets them added, and the users MERGE can rely on received_at.
    for (name, ty) in fixed_cols {
        let ty = existing.and_then(|e| e.get(name)).cloned().unwrap_or(ty);
        types.insert(name.to_string(), ty);
        order.push(name.to_string());
    }
    for row in &rows {
        for (column, value) in row {
            let decided = existing.and_then(|e| e.get(column)).or_else(|| fixed.get(column.as_str()));
            match (types.get_mut(column), decided) {
                (Some(_), Some(_)) => {}
                (None, Some(ty)) => {
                    types.insert(column.clone(), ty.clone());
                    order.push(column.clone());
                }
                (Some(ty), None) => *ty = ty.clone().widen(&ColumnType::infer(value)),
                (None, None) => {
                    types.insert(column.clone(), ColumnType::infer(value));
                    order.push(column.clone());
                }
            }
        }
    }

    for row in &mut rows {
        let row_id = row.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let received_at = row.get("received_at").cloned();
        let mut misfits = Vec::new();
        for (column, value) in row.iter_mut() {
            match types[column].coerce(value) {
                Ok(v) => *value = v,
                Err(reason) => misfits.push((column.clone(), reason)),
            }
        }
        for (column, reason) in misfits {
            let value = row.remove(&column).unwrap_or(Value::Null);
            discards.push(discard_row(table, &column, &value, &reason, &row_id, received_at.as_ref(), uuid_ts));
        }
    }

    let columns: Vec<(String, ColumnType)> = order.iter().map(|c| (c.clone(), types[c].clone())).collect();
    let new_columns = match existing {
        None => Vec::new(),
        Some(e) => columns.iter().filter(|(c, _)| !e.contains_key(c)).cloned().collect(),
    };
    TablePlan { table: table.to_string(), create: existing.is_none(), new_columns, columns, rows }
}

fn discard_row(
    table: &str,
    column: &str,
    value: &Value,
    reason: &str,
    row_id: &str,
    received_at: Option<&Value>,
    uuid_ts: &str,
) -> Row {
    // One discard per (table, column, row): a retried load finds its discards already there.
    let id = hex::encode(&Sha256::digest(format!("{table}\u{0}{column}\u{0}{row_id}"))[..16]);
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut row = Row::new();
    row.insert("id".into(), Value::String(id));
    row.insert("table_name".into(), Value::String(table.into()));
    row.insert("column_name".into(), Value::String(column.into()));
    row.insert("column_value".into(), Value::String(text));
    row.insert("reason".into(), Value::String(reason.into()));
    row.insert("row_id".into(), Value::String(row_id.into()));
    if let Some(r) = received_at.filter(|r| ColumnType::Timestamp.coerce(r).is_ok()) {
        row.insert("received_at".into(), r.clone());
    }
    row.insert("uuid_ts".into(), Value::String(uuid_ts.into()));
    row
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    const TS: &str = "2024-05-01T10:00:00.000Z";

    fn events(values: &[Value]) -> Vec<OutEvent> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| OutEvent { offset: i as u64, source: Arc::from("s"), json: v.to_string().into_bytes().into() })
            .collect()
    }

    fn track(id: &str, props: Value) -> Value {
        json!({"type": "track", "messageId": id, "userId": "u", "event": "Buy", "receivedAt": TS, "properties": props})
    }

    #[test]
    fn new_tables_get_fixed_and_inferred_columns() {
        let p = plan(&events(&[track("a", json!({"n": 1})), track("b", json!({"n": 1.5, "ok": true}))]), &Schemas::new(), TS, DISCARDS_TABLE);
        let buy = p.tables.iter().find(|t| t.table == "buy").unwrap();
        assert!(buy.create);
        let cols: BTreeMap<_, _> = buy.columns.iter().cloned().collect();
        assert_eq!(cols["n"], ColumnType::Float);
        assert_eq!(cols["ok"], ColumnType::Boolean);
        assert_eq!(cols["sent_at"], ColumnType::Timestamp);
        assert_eq!(buy.rows.len(), 2);
    }

    #[test]
    fn misfits_go_to_discards_and_new_columns_are_listed() {
        let mut known = Schemas::new();
        let mut buy: BTreeMap<String, ColumnType> =
            fixed_columns("buy").into_iter().map(|(c, t)| (c.to_string(), t)).collect();
        buy.insert("n".into(), ColumnType::Int);
        known.insert("buy".into(), buy);
        let p = plan(&events(&[track("a", json!({"n": "many", "color": "red"}))]), &known, TS, DISCARDS_TABLE);
        let table = p.tables.iter().find(|t| t.table == "buy").unwrap();
        assert_eq!(table.new_columns, vec![("color".to_string(), ColumnType::Text)]);
        assert!(!table.rows[0].contains_key("n"));
        let discards = p.tables.last().unwrap();
        assert_eq!(discards.table, DISCARDS_TABLE);
        assert_eq!(discards.rows[0]["column_value"], json!("many"));
        assert_eq!(discards.rows[0]["row_id"], json!("a"));
    }

    #[test]
    fn ids_are_deduplicated_and_users_merged() {
        let identify = |id: &str, traits: Value| {
            json!({"type": "identify", "messageId": id, "userId": "u1", "receivedAt": TS, "traits": traits})
        };
        let p = plan(
            &events(&[
                track("a", json!({})),
                track("a", json!({})),
                identify("i1", json!({"email": "a@x", "plan": "free"})),
                identify("i2", json!({"plan": "pro"})),
                json!({"type": "track"}),
            ]),
            &Schemas::new(),
            TS,
            DISCARDS_TABLE,
        );
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].0, 4);
        assert_eq!(p.tables.iter().find(|t| t.table == "tracks").unwrap().rows.len(), 1);
        let users = p.tables.iter().find(|t| t.table == "users").unwrap();
        assert_eq!(users.rows.len(), 1);
        assert_eq!(users.rows[0]["plan"], json!("pro"));
        assert_eq!(users.rows[0]["email"], json!("a@x"));
    }
}
