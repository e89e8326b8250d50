//! Warehouse names and column types: how event keys become Snowflake identifiers and how a JSON
//! value's type is inferred and checked against an existing column.
//!
//! Names are kept to `[a-z_][a-z0-9_]*` so that analysts can write them unquoted; the SQL we
//! generate quotes their upper-case form, which is what Snowflake stores for unquoted names.

use chrono::DateTime;
use serde_json::Value;

/// Longest identifier we produce. Snowflake allows 255; staying well below leaves room for the
/// prefixes we add and keeps names readable in BI tools.
pub const MAX_IDENTIFIER_LEN: usize = 127;

/// Tables every load may write; a track event whose name maps to one of them gets a `_` prefix.
pub const FIXED_TABLES: &[&str] =
    &["tracks", "identifies", "users", "pages", "screens", "groups", "aliases", DISCARDS_TABLE];

/// Where values that do not fit their column's type go, unless `discards_table:` names another
/// table (see [`super::default_discards_table`]). An event table that would take the
/// configured name gets a `_` prefix in the plan.
pub const DISCARDS_TABLE: &str = "rudder_discards";

/// Snowflake's reserved keywords (docs: "Reserved & limited keywords"), which cannot be used as
/// unquoted identifiers; a name equal to one of them gets a `_` prefix.
const RESERVED: &[&str] = &[
    "account", "all", "alter", "and", "any", "as", "between", "by", "case", "cast", "check",
    "column", "connect", "connection", "constraint", "create", "cross", "current", "current_date",
    "current_time", "current_timestamp", "current_user", "database", "delete", "distinct", "drop",
    "else", "exists", "false", "following", "for", "from", "full", "grant", "group", "gscluster",
    "having", "ilike", "in", "increment", "inner", "insert", "intersect", "into", "is", "issue",
    "join", "lateral", "left", "like", "localtime", "localtimestamp", "minus", "natural", "not",
    "null", "of", "on", "or", "order", "organization", "qualify", "regexp", "revoke", "right",
    "rlike", "row", "rows", "sample", "schema", "select", "set", "some", "start", "table",
    "tablesample", "then", "to", "trigger", "true", "try_cast", "union", "unique", "update",
    "using", "values", "view", "when", "whenever", "where", "with",
];

/// Turns any key (`userId`, `Order Completed`, `$browser`, `2fa`) into a warehouse name
/// (`user_id`, `order_completed`, `_browser`, `_2fa`): snake_case, characters outside
/// `[a-z0-9_]` become `_`, runs of `_` collapse, a leading digit or a reserved word gets a `_`
/// prefix, and the result is cut to [`MAX_IDENTIFIER_LEN`].
pub fn to_identifier(raw: &str) -> String {
    let chars: Vec<char> = raw.trim().chars().collect();
    let mut out = String::with_capacity(chars.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|p| chars[p]);
            let next = chars.get(i + 1);
            // A word starts at `userId` -> user|Id and at the end of an acronym: `HTTPServer` -> http|server.
            let boundary = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase()));
            if boundary {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else {
            out.push('_');
        }
    }
    let mut collapsed = String::with_capacity(out.len());
    for c in out.chars() {
        if !(c == '_' && collapsed.ends_with('_')) {
            collapsed.push(c);
        }
    }
    // A trailing `_` only comes from punctuation (`price ($)`), never from the key's meaning.
    while collapsed.len() > 1 && collapsed.ends_with('_') {
        collapsed.pop();
    }
    let mut name = if collapsed.is_empty() { "_".to_string() } else { collapsed };
    if name.starts_with(|c: char| c.is_ascii_digit()) || RESERVED.contains(&name.as_str()) {
        name.insert(0, '_');
    }
    name.truncate(MAX_IDENTIFIER_LEN);
    name
}

/// The table of a track event: its name as an identifier, kept off the fixed tables' names.
pub fn event_table(event: &str) -> String {
    let name = to_identifier(event);
    if FIXED_TABLES.contains(&name.as_str()) {
        let mut prefixed = format!("_{name}");
        prefixed.truncate(MAX_IDENTIFIER_LEN);
        prefixed
    } else {
        name
    }
}

/// Quotes a name produced by [`to_identifier`] (or a validated config name) for SQL. The upper-case
/// form is what Snowflake stores for an unquoted name, so `"TRACKS"` and `tracks` are one table.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.to_ascii_uppercase().replace('"', "\"\""))
}

/// The column types sluice creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Float,
    Boolean,
    Timestamp,
    Text,
    Variant,
    /// A type sluice did not create (changed by hand); values are discarded rather than guessed at.
    Other(String),
}

impl ColumnType {
    /// The type in `CREATE TABLE` / `ADD COLUMN` and in the MERGE's cast.
    pub fn sql(&self) -> &str {
        match self {
            ColumnType::Int => "NUMBER(38,0)",
            ColumnType::Float => "FLOAT",
            ColumnType::Boolean => "BOOLEAN",
            ColumnType::Timestamp => "TIMESTAMP_TZ",
            ColumnType::Text => "VARCHAR",
            ColumnType::Variant => "VARIANT",
            ColumnType::Other(t) => t,
        }
    }

    /// Reads `information_schema.columns.data_type` (plus `numeric_scale`) back into a type.
    pub fn from_information_schema(data_type: &str, numeric_scale: Option<i64>) -> ColumnType {
        let t = data_type.trim().to_ascii_uppercase();
        let base = t.split('(').next().unwrap_or("").trim();
        match base {
            "NUMBER" | "DECIMAL" | "NUMERIC" | "INT" | "INTEGER" | "BIGINT" | "SMALLINT"
            | "TINYINT" | "BYTEINT" | "HUGEINT" => {
                if numeric_scale.unwrap_or(0) > 0 {
                    ColumnType::Float
                } else {
                    ColumnType::Int
                }
            }
            "FLOAT" | "FLOAT4" | "FLOAT8" | "DOUBLE" | "DOUBLE PRECISION" | "REAL" => ColumnType::Float,
            "BOOLEAN" | "BOOL" => ColumnType::Boolean,
            "TEXT" | "VARCHAR" | "STRING" | "CHAR" | "CHARACTER" => ColumnType::Text,
            "VARIANT" | "OBJECT" | "ARRAY" | "JSON" => ColumnType::Variant,
            b if b.starts_with("TIMESTAMP") => ColumnType::Timestamp,
            _ => ColumnType::Other(t),
        }
    }

    /// The type a new column gets from a (non-null) value.
    pub fn infer(value: &Value) -> ColumnType {
        match value {
            Value::Bool(_) => ColumnType::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int,
            Value::Number(_) => ColumnType::Float,
            Value::String(s) if looks_like_timestamp(s) => ColumnType::Timestamp,
            Value::String(_) => ColumnType::Text,
            Value::Array(_) | Value::Object(_) | Value::Null => ColumnType::Variant,
        }
    }

    /// The type of a new column that saw `self` first and then `other` in the same batch: numbers
    /// widen to FLOAT and timestamp-looking text that is not always a timestamp stays text. Any
    /// other mix keeps the first type; the values that do not fit it are discarded.
    pub fn widen(self, other: &ColumnType) -> ColumnType {
        match (&self, other) {
            (ColumnType::Int, ColumnType::Float) => ColumnType::Float,
            (ColumnType::Timestamp, ColumnType::Text) => ColumnType::Text,
            _ => self,
        }
    }

    /// The value as it is written to the staged file for a column of this type, or why it does
    /// not fit (the value then goes to the discards table).
    pub fn coerce(&self, value: &Value) -> Result<Value, String> {
        let misfit = || Err(format!("{} value does not fit a {} column", kind(value), self.sql()));
        match self {
            ColumnType::Variant => Ok(value.clone()),
            ColumnType::Text => Ok(match value {
                Value::String(_) => value.clone(),
                other => Value::String(other.to_string()),
            }),
            ColumnType::Int => match value {
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(value.clone()),
                // 3.0 is an integer that went through a float somewhere; 3.5 is not.
                Value::Number(n) => match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e18 => Ok(Value::from(f as i64)),
                    _ => misfit(),
                },
                _ => misfit(),
            },
            ColumnType::Float => match value {
                Value::Number(_) => Ok(value.clone()),
                _ => misfit(),
            },
            ColumnType::Boolean => match value {
                Value::Bool(_) => Ok(value.clone()),
                _ => misfit(),
            },
            ColumnType::Timestamp => match value {
                Value::String(s) if looks_like_timestamp(s) => Ok(value.clone()),
                _ => misfit(),
            },
            ColumnType::Other(_) => misfit(),
        }
    }
}

/// RFC 3339 date-times (what SDKs send: `2024-05-01T10:00:00.000Z`); plain dates and free text
/// stay text, so that a column is only a timestamp when its values really are.
pub fn looks_like_timestamp(s: &str) -> bool {
    s.len() >= 20 && s.len() <= 40 && DateTime::parse_from_rfc3339(s).is_ok()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "decimal",
        Value::String(s) if looks_like_timestamp(s) => "timestamp",
        Value::String(_) => "text",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifiers_are_snake_case_and_safe() {
        assert_eq!(to_identifier("userId"), "user_id");
        assert_eq!(to_identifier("Order Completed"), "order_completed");
        assert_eq!(to_identifier("HTTPServer"), "http_server");
        assert_eq!(to_identifier("$browser"), "_browser");
        assert_eq!(to_identifier("price ($)"), "price");
        assert_eq!(to_identifier("2fa enabled"), "_2fa_enabled");
        assert_eq!(to_identifier("select"), "_select");
        assert_eq!(to_identifier("Group"), "_group");
        assert_eq!(to_identifier("café"), "caf");
        assert_eq!(to_identifier(""), "_");
        assert_eq!(to_identifier(&"x".repeat(300)).len(), MAX_IDENTIFIER_LEN);
    }

    #[test]
    fn event_tables_avoid_the_fixed_tables() {
        assert_eq!(event_table("Users"), "_users");
        assert_eq!(event_table("Tracks"), "_tracks");
        assert_eq!(event_table("Product Viewed"), "product_viewed");
        assert_eq!(quote("product_viewed"), "\"PRODUCT_VIEWED\"");
    }

    #[test]
    fn types_are_inferred_widened_and_checked() {
        assert_eq!(ColumnType::infer(&json!(3)), ColumnType::Int);
        assert_eq!(ColumnType::infer(&json!(3.5)), ColumnType::Float);
        assert_eq!(ColumnType::infer(&json!("2024-05-01T10:00:00.000Z")), ColumnType::Timestamp);
        assert_eq!(ColumnType::infer(&json!("2024-05-01")), ColumnType::Text);
        assert_eq!(ColumnType::infer(&json!([1])), ColumnType::Variant);
        assert_eq!(ColumnType::Int.widen(&ColumnType::Float), ColumnType::Float);
        assert_eq!(ColumnType::Timestamp.widen(&ColumnType::Text), ColumnType::Text);
        assert_eq!(ColumnType::Int.widen(&ColumnType::Text), ColumnType::Int);
        assert_eq!(ColumnType::Int.coerce(&json!(4.0)), Ok(json!(4)));
        assert!(ColumnType::Int.coerce(&json!("abc")).unwrap_err().contains("text value"));
        assert_eq!(ColumnType::Text.coerce(&json!(7)), Ok(json!("7")));
        assert_eq!(ColumnType::Text.coerce(&json!({"a": 1})), Ok(json!("{\"a\":1}")));
        assert!(ColumnType::Boolean.coerce(&json!(1)).is_err());
        assert_eq!(ColumnType::from_information_schema("NUMBER", Some(0)), ColumnType::Int);
        assert_eq!(ColumnType::from_information_schema("TIMESTAMP_TZ", None), ColumnType::Timestamp);
        assert_eq!(ColumnType::from_information_schema("TEXT", None), ColumnType::Text);
    }
}
