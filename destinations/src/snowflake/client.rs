//! The SQL connection and the one place where Snowflake failures are classified for the router.
//!
//! Temporary (the router retries): network errors, HTTP errors and unreadable responses, an
//! expired session, a suspended or missing warehouse, timeouts and cancellations, and any code
//! not known to be permanent. Permanent (the router dead-letters): SQL compilation errors
//! (families 001xxx/002xxx, e.g. 002003 "object does not exist"), data errors (100xxx), missing
//! privileges (003001) and rejected credentials (390100-390199 on login; retrying a wrong
//! password would only lock the user).

use arrow::array::Array;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use snowflake_api::{QueryResult, SnowflakeApi, SnowflakeApiError};

use crate::DeliveryError;

/// Longest statement quoted in an error: enough to recognise it, short enough for a log line.
const MAX_QUOTED_SQL: usize = 600;

/// A session to Snowflake that runs one statement at a time.
pub struct Warehouse {
    api: SnowflakeApi,
}

impl Warehouse {
    pub fn new(api: SnowflakeApi) -> Self {
        Warehouse { api }
    }

    /// Runs a statement whose result is not needed.
    pub async fn exec(&self, sql: &str) -> Result<(), DeliveryError> {
        tracing::debug!(sql, "snowflake exec");
        self.api.exec(sql).await.map(|_| ()).map_err(|e| classify(e, sql))
    }

    /// Runs a query and returns its rows as text (`None` for SQL NULL). Meant for small
    /// metadata results such as `information_schema` lookups.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, DeliveryError> {
        tracing::debug!(sql, "snowflake query");
        let result = self.api.exec(sql).await.map_err(|e| classify(e, sql))?;
        let mut rows = Vec::new();
        match result {
            QueryResult::Empty => {}
            QueryResult::Json(json) => {
                for row in json.value.as_array().into_iter().flatten() {
                    let cells = row.as_array().map(Vec::as_slice).unwrap_or_default();
                    rows.push(
                        cells
                            .iter()
                            .map(|c| match c {
                                serde_json::Value::Null => None,
                                serde_json::Value::String(s) => Some(s.clone()),
                                other => Some(other.to_string()),
                            })
                            .collect(),
                    );
                }
            }
            QueryResult::Arrow(batches) => {
                let options = FormatOptions::default();
                for batch in batches {
                    let formatters = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| DeliveryError::temporary(format!("unreadable result of `{}`: {e}", quoted(sql))))?;
                    for i in 0..batch.num_rows() {
                        rows.push(
                            batch
                                .columns()
                                .iter()
                                .zip(&formatters)
                                .map(|(col, f)| (!col.is_null(i)).then(|| f.value(i).to_string()))
                                .collect(),
                        );
                    }
                }
            }
        }
        Ok(rows)
    }
}

fn quoted(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.len() <= MAX_QUOTED_SQL {
        return one_line;
    }
    let mut end = MAX_QUOTED_SQL;
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &one_line[..end])
}

/// Whether a Snowflake error code (with its message) means the same statement will fail again.
fn is_permanent_code(code: &str, message: &str) -> bool {
    if message.contains("SQL compilation error") {
        return true;
    }
    code.starts_with("001") || code.starts_with("002") || code.starts_with("100") || code == "003001"
}

/// Turns a snowflake-api error for `sql` into the router's vocabulary, keeping the statement and
/// Snowflake's error code in the reason.
pub fn classify(error: SnowflakeApiError, sql: &str) -> DeliveryError {
    use snowflake_api::connection::ConnectionError;
    let statement = quoted(sql);
    match error {
        SnowflakeApiError::ApiError(code, message) => {
            let reason = format!("Snowflake error {code}: {message} (statement: `{statement}`)");
            if is_permanent_code(&code, &message) {
                DeliveryError::permanent(reason)
            } else {
                DeliveryError::temporary(reason)
            }
        }
        SnowflakeApiError::AuthError(auth) => auth_error(&auth.to_string(), &statement),
        SnowflakeApiError::RequestError(ConnectionError::UrlParsing(e)) => {
            DeliveryError::permanent(format!("invalid Snowflake URL (check `account`): {e}"))
        }
        SnowflakeApiError::RequestError(e) => {
            DeliveryError::temporary(format!("Snowflake request failed: {e} (statement: `{statement}`)"))
        }
        other => DeliveryError::temporary(format!("Snowflake call failed: {other} (statement: `{statement}`)")),
    }
}

/// snowflake-api does not export its `AuthError` type, so the login failure is read from its
/// message: "Failed to authenticate. Error code: 390100. Message: ...".
fn auth_error(message: &str, statement: &str) -> DeliveryError {
    let code = message
        .split("Error code: ")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
        .unwrap_or_default();
    // 390100 wrong credentials, 390101 user disabled, 390144 bad JWT, ...: retrying only counts
    // failed logins against the user (Snowflake locks it after a few); the operator must act.
    // A malformed private key is caught when the destination is built (see `mod.rs`).
    let rejected = code.starts_with("3901") || message.contains("wasn't provided");
    if rejected {
        DeliveryError::permanent(format!("Snowflake login rejected: {message}"))
    } else {
        DeliveryError::temporary(format!("Snowflake login failed: {message} (statement: `{statement}`)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, message: &str) -> DeliveryError {
        classify(SnowflakeApiError::ApiError(code.into(), message.into()), "SELECT 1")
    }

    #[test]
    fn compilation_and_data_errors_are_permanent() {
        let e = api("002003", "SQL compilation error: Object 'X' does not exist or not authorized.");
        assert!(!e.is_retriable());
        assert!(e.to_string().contains("002003") && e.to_string().contains("SELECT 1"), "{e}");
        assert!(!api("001003", "syntax error").is_retriable());
        assert!(!api("100038", "Numeric value 'abc' is not recognized").is_retriable());
        assert!(!api("003001", "Insufficient privileges").is_retriable());
    }

    #[test]
    fn warehouse_and_session_trouble_is_temporary() {
        assert!(api("000606", "No active warehouse selected in the current session.").is_retriable());
        assert!(api("000630", "Statement reached its statement or warehouse timeout").is_retriable());
        assert!(api("390114", "Authentication token has expired.").is_retriable());
        assert!(api("000603", "Processing aborted due to error 300002:2523776359; incident 123.").is_retriable());
    }

    #[test]
    fn rejected_logins_are_permanent() {
        let e = auth_error("Failed to authenticate. Error code: 390100. Message: Incorrect username or password was specified.", "SELECT 1");
        assert!(!e.is_retriable(), "{e}");
        assert!(auth_error("error sending request for url (https://x.snowflakecomputing.com/)", "SELECT 1").is_retriable());
    }

    #[test]
    fn long_statements_are_shortened() {
        let sql = format!("INSERT INTO t VALUES {}", "(1), ".repeat(1000));
        assert!(quoted(&sql).len() <= MAX_QUOTED_SQL + 3);
    }
}
