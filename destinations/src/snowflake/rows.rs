//! Events to warehouse rows: which tables an event lands in and how its nested JSON is flattened
//! into columns (`context.library.name` -> `context_library_name`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::{event_table, to_identifier, ColumnType, MAX_IDENTIFIER_LEN};

/// Nested objects deeper than this stay whole in one VARIANT column instead of exploding into
/// ever longer column names.
const MAX_FLATTEN_DEPTH: usize = 3;

/// One row for one table: column name -> value. Null values are left out.
pub type Row = BTreeMap<String, Value>;

/// Columns every event table has, with their types (the rest are inferred from values).
pub const COMMON_COLUMNS: &[(&str, ColumnType)] = &[
    ("id", ColumnType::Text),
    ("anonymous_id", ColumnType::Text),
    ("user_id", ColumnType::Text),
    ("received_at", ColumnType::Timestamp),
    ("sent_at", ColumnType::Timestamp),
    ("timestamp", ColumnType::Timestamp),
    ("original_timestamp", ColumnType::Timestamp),
    ("uuid_ts", ColumnType::Timestamp),
];

/// Columns of the discards table (whatever `discards_table:` calls it).
pub fn discards_columns() -> Vec<(&'static str, ColumnType)> {
    use ColumnType::*;
    vec![
        ("id", Text),
        ("table_name", Text),
        ("column_name", Text),
        ("column_value", Text),
        ("reason", Text),
        ("row_id", Text),
        ("received_at", Timestamp),
        ("uuid_ts", Timestamp),
    ]
}

/// Columns a given table always has: the common ones, plus its type's own.
pub fn fixed_columns(table: &str) -> Vec<(&'static str, ColumnType)> {
    use ColumnType::*;
    let extra: &[(&'static str, ColumnType)] = match table {
        "users" => {
            return vec![("id", Text), ("received_at", Timestamp), ("uuid_ts", Timestamp)];
        }
        "identifies" => &[],
        "aliases" => &[("previous_id", Text)],
        "pages" | "screens" => &[("name", Text), ("category", Text)],
        "groups" => &[("group_id", Text)],
        // `tracks` and every event table.
        _ => &[("event", Text), ("event_text", Text)],
    };
    COMMON_COLUMNS.iter().cloned().chain(extra.iter().cloned()).collect()
}

/// What one event turns into.
#[derive(Debug, Default)]
pub struct EventRows {
    /// (table, row) pairs, in the order they were produced.
    pub rows: Vec<(String, Row)>,
}

/// Flattens one event. `uuid_ts` is the load time, the same for every row of a batch.
/// An event that cannot be placed (not an object, no `messageId`, unknown `type`) is an error
/// carrying the reason; the caller reports it as rejected and loads the rest.
pub fn event_rows(event: &Value, uuid_ts: &str) -> Result<EventRows, String> {
    let obj = event.as_object().ok_or("event is not a JSON object")?;
    let id = match obj.get("messageId") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err("event has no messageId".into()),
    };
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();

    let mut common = Row::new();
    common.insert("id".into(), Value::String(id.clone()));
    for (key, column) in [
        ("anonymousId", "anonymous_id"),
        ("userId", "user_id"),
        ("receivedAt", "received_at"),
        ("sentAt", "sent_at"),
        ("timestamp", "timestamp"),
        ("originalTimestamp", "original_timestamp"),
    ] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
            common.insert(column.into(), v.clone());
        }
    }
    common.insert("uuid_ts".into(), Value::String(uuid_ts.into()));
    if let Some(Value::Object(context)) = obj.get("context") {
        flatten_into(&mut common, "context", context, 1, &[]);
    }

    let mut out = EventRows::default();
    match kind.as_str() {
        "track" => {
            let name = match obj.get("event") {
                Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                _ => return Err("track event has no event name".into()),
            };
            let mut row = common;
            row.insert("event_text".into(), Value::String(name.clone()));
            let table = event_table(&name);
            row.insert("event".into(), Value::String(table.clone()));
            out.rows.push(("tracks".into(), row.clone()));
            add_properties(&mut row, &table, obj.get("properties"));
            out.rows.push((table, row));
        }
        "identify" => {
            let mut row = common;
            add_properties(&mut row, "identifies", obj.get("traits"));
            out.rows.push(("identifies".into(), row));
            if let Some(user_id) = obj.get("userId").filter(|v| !v.is_null()) {
                out.rows.push(("users".into(), user_row(obj, user_id, uuid_ts)));
            }
        }
        "page" | "screen" => {
            let table = if kind == "page" { "pages" } else { "screens" };
            let mut row = common;
            for key in ["name", "category"] {
                if let Some(v) = obj.get(key).filter(|v| !v.is_null()) {
                    row.insert(key.into(), v.clone());
                }
            }
            add_properties(&mut row, table, obj.get("properties"));
            out.rows.push((table.into(), row));
        }
        "group" => {
            let mut row = common;
            if let Some(v) = obj.get("groupId").filter(|v| !v.is_null()) {
                row.insert("group_id".into(), v.clone());
            }
            add_properties(&mut row, "groups", obj.get("traits"));
            out.rows.push(("groups".into(), row));
        }
        "alias" => {
            let mut row = common;
            if let Some(v) = obj.get("previousId").filter(|v| !v.is_null()) {
                row.insert("previous_id".into(), v.clone());
            }
            out.rows.push(("aliases".into(), row));
        }
        "" => return Err("event has no type".into()),
        other => return Err(format!("unknown event type {other:?}")),
    }
    Ok(out)
}

/// The `users` row of an identify: the user's traits (from `context.traits`, then `traits`,
/// which wins), keyed by the user id.
fn user_row(obj: &Map<String, Value>, user_id: &Value, uuid_ts: &str) -> Row {
    let mut row = Row::new();
    let id = match user_id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    row.insert("id".into(), Value::String(id));
    if let Some(v) = obj.get("receivedAt").filter(|v| !v.is_null()) {
        row.insert("received_at".into(), v.clone());
    }
    row.insert("uuid_ts".into(), Value::String(uuid_ts.into()));
    let context_traits = obj.get("context").and_then(|c| c.get("traits"));
    add_properties(&mut row, "users", context_traits);
    add_properties(&mut row, "users", obj.get("traits"));
    row
}

/// Adds an event's `properties` or `traits`, flattened, without a prefix. A key that would land
/// on one of the table's fixed columns (a property called `id`, say) is kept as `_id` instead
/// of overwriting it.
fn add_properties(row: &mut Row, table: &str, props: Option<&Value>) {
    let Some(Value::Object(props)) = props else { return };
    let fixed: Vec<&str> = fixed_columns(table).into_iter().map(|(c, _)| c).collect();
    flatten_into(row, "", props, 1, &fixed);
}

fn flatten_into(row: &mut Row, prefix: &str, obj: &Map<String, Value>, depth: usize, fixed: &[&str]) {
    for (key, value) in obj {
        let mut name = if prefix.is_empty() {
            to_identifier(key)
        } else {
            let mut joined = format!("{prefix}_{}", to_identifier(key).trim_start_matches('_'));
            joined.truncate(MAX_IDENTIFIER_LEN);
            joined
        };
        if fixed.contains(&name.as_str()) {
            name.insert(0, '_');
            name.truncate(MAX_IDENTIFIER_LEN);
        }
        match value {
            Value::Null => {}
            Value::Object(inner) if inner.is_empty() => {}
            Value::Object(inner) if depth < MAX_FLATTEN_DEPTH => {
                flatten_into(row, &name, inner, depth + 1, &[]);
            }
            other => {
                row.insert(name, other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TS: &str = "2024-05-01T10:00:00.000Z";

    #[test]
    fn a_track_lands_in_tracks_and_its_event_table() {
        let ev = json!({"type": "track", "messageId": "m1", "userId": "u1", "event": "Order Completed",
            "receivedAt": TS, "context": {"library": {"name": "js"}, "ip": "1.2.3.4"},
            "properties": {"total": 9.5, "id": "o1", "items": [1, 2], "shipping": {"address": {"city": "Oslo", "geo": {"lat": 1}}}}});
        let rows = event_rows(&ev, TS).unwrap().rows;
        assert_eq!(rows.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["tracks", "order_completed"]);
        let (_, tracks) = &rows[0];
        assert_eq!(tracks["context_library_name"], json!("js"));
        assert_eq!(tracks["event"], json!("order_completed"));
        assert_eq!(tracks["event_text"], json!("Order Completed"));
        assert!(!tracks.contains_key("total"), "tracks has no properties");
        let (_, event) = &rows[1];
        assert_eq!(event["id"], json!("m1"));
        assert_eq!(event["_id"], json!("o1"));
        assert_eq!(event["total"], json!(9.5));
        assert_eq!(event["items"], json!([1, 2]));
        assert_eq!(event["shipping_address_city"], json!("Oslo"));
        assert_eq!(event["shipping_address_geo"], json!({"lat": 1}));
    }

    #[test]
    fn an_identify_updates_users_with_traits() {
        let ev = json!({"type": "identify", "messageId": "m2", "userId": "u1", "receivedAt": TS,
            "context": {"traits": {"plan": "free", "email": "a@x"}}, "traits": {"plan": "pro"}});
        let rows = event_rows(&ev, TS).unwrap().rows;
        let (table, user) = &rows[1];
        assert_eq!(table, "users");
        assert_eq!(user["id"], json!("u1"));
        assert_eq!(user["plan"], json!("pro"));
        assert_eq!(user["email"], json!("a@x"));
    }

    #[test]
    fn unplaceable_events_are_errors() {
        assert!(event_rows(&json!({"type": "track", "event": "x"}), TS).unwrap_err().contains("messageId"));
        assert!(event_rows(&json!({"type": "boom", "messageId": "m"}), TS).unwrap_err().contains("boom"));
        assert!(event_rows(&json!({"type": "track", "messageId": "m"}), TS).unwrap_err().contains("event name"));
    }
}
