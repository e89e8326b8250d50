//! Test-only: points snowflake-api 0.14 at a local fakesnow server (see
//! shared/guide/test-backends.md). snowflake-api always calls
//! `https://{account}.snowflakecomputing.com/...` and expects response fields fakesnow leaves
//! out, so an HTTP middleware handed to `SnowflakeDestination::with_client` rewrites the URL and
//! fills those fields. Production code never goes through this file.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::Array;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use async_trait::async_trait;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use serde_json::{json, Value};
use snowflake_api::{AuthArgs, AuthType, PasswordArgs, QueryResult, SnowflakeApi, SnowflakeApiBuilder};
use sluice_destinations::snowflake::{AuthConfig, Secret, SnowflakeConfig, SnowflakeDestination, StageConfig};

/// The fakesnow address: `SLUICE_TEST_SNOWFLAKE_URL` or the one `scripts/backends.sh` starts.
/// Panics (never skips) when nothing answers there.
pub fn url() -> reqwest::Url {
    let raw = std::env::var("SLUICE_TEST_SNOWFLAKE_URL").unwrap_or_else(|_| "http://127.0.0.1:8765".into());
    let url: reqwest::Url = raw.parse().expect("SLUICE_TEST_SNOWFLAKE_URL is not a URL");
    let addr: SocketAddr = format!("{}:{}", url.host_str().unwrap_or("127.0.0.1"), url.port().unwrap_or(80))
        .parse()
        .expect("fakesnow address");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!("no fakesnow server at {raw}: run `scripts/backends.sh start` (or set SLUICE_TEST_SNOWFLAKE_URL)");
    }
    url
}

/// A name no other test (or earlier run) uses: tests run in parallel against one server.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), nanos % 1_000_000_000)
}

/// Test controls shared with the middleware.
#[derive(Clone, Default)]
pub struct Faults {
    /// How many of the next query requests get an HTTP 503 instead of reaching fakesnow.
    pub fail_next_queries: Arc<AtomicU32>,
    /// Nanoseconds spent waiting for fakesnow's answers (the benchmark's split of the time).
    pub server_nanos: Arc<AtomicU64>,
}

struct LocalSnowflake {
    base: reqwest::Url,
    faults: Faults,
}

/// Fills what snowflake-api's response types require and fakesnow 0.12.1 does not send.
fn patch(path: &str, v: &mut Value) {
    let ok = v.get("success").and_then(Value::as_bool).unwrap_or(false);
    let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) else { return };
    if path.ends_with("/login-request") && ok {
        let token = data.get("token").cloned().unwrap_or(json!(""));
        data.entry("sessionId").or_insert(json!(1));
        data.entry("masterToken").or_insert(token);
        data.entry("validityInSeconds").or_insert(json!(3600));
        data.entry("masterValidityInSeconds").or_insert(json!(14400));
        if let Some(info) = data.get_mut("sessionInfo").and_then(Value::as_object_mut) {
            info.entry("roleName").or_insert(json!("SYSADMIN"));
        }
    } else if path.ends_with("/query-request") {
        if ok && data.contains_key("rowtype") {
            let returned = match data.get("rowset") {
                Some(Value::Array(a)) => a.len() as i64,
                _ => data.get("total").and_then(Value::as_i64).unwrap_or(0),
            };
            data.entry("returned").or_insert(json!(returned));
            data.entry("version").or_insert(json!(1));
            data.entry("finalRoleName").or_insert(json!("SYSADMIN"));
            data.entry("parameters").or_insert(json!([]));
        } else if !ok {
            data.entry("age").or_insert(json!(0));
            data.entry("internalError").or_insert(json!(false));
            data.entry("queryId").or_insert(json!(""));
            data.entry("sqlState").or_insert(json!(""));
        }
    }
}

#[async_trait]
impl Middleware for LocalSnowflake {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        ext: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url_mut();
        if url.host_str().is_some_and(|h| h.ends_with(".snowflakecomputing.com")) {
            url.set_scheme(self.base.scheme()).expect("scheme");
            url.set_host(self.base.host_str()).expect("host");
            url.set_port(self.base.port()).expect("port");
        }
        let path = req.url().path().to_string();
        if path.ends_with("/query-request") {
            let pending = &self.faults.fail_next_queries;
            if pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                let resp = http::Response::builder()
                    .status(503)
                    .header("content-type", "text/html")
                    .body("<html>503 Service Unavailable</html>")
                    .unwrap();
                return Ok(reqwest::Response::from(resp));
            }
        }
        let started = std::time::Instant::now();
        let resp = next.run(req, ext).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await?;
        self.faults.server_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let body = match serde_json::from_slice::<Value>(&body) {
            Ok(mut v) => {
                patch(&path, &mut v);
                serde_json::to_vec(&v).unwrap()
            }
            Err(_) => body.to_vec(),
        };
        let mut out = http::Response::builder().status(status);
        for (k, v) in &headers {
            if k != http::header::CONTENT_LENGTH && k != http::header::CONTENT_ENCODING {
                out = out.header(k, v);
            }
        }
        Ok(reqwest::Response::from(out.body(body).unwrap()))
    }
}

/// An HTTP client that sends snowflake-api's requests to fakesnow.
pub fn client(faults: &Faults) -> ClientWithMiddleware {
    client_to(url(), faults)
}

/// Same, to any address (an unused port, for connection failures).
pub fn client_to(base: reqwest::Url, faults: &Faults) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::builder().gzip(true).build().unwrap())
        .with(LocalSnowflake { base, faults: faults.clone() })
        .build()
}

/// A session for the test's own setup and checks.
pub struct Admin {
    api: SnowflakeApi,
}

impl Admin {
    pub fn connect(database: Option<&str>) -> Admin {
        let auth = AuthArgs {
            account_identifier: "fakeacct".into(),
            warehouse: Some("WH".into()),
            database: database.map(str::to_string),
            schema: None,
            username: "sluice".into(),
            role: Some("SYSADMIN".into()),
            auth_type: AuthType::Password(PasswordArgs { password: "secret".into() }),
        };
        let api = SnowflakeApiBuilder::new(auth).with_client(client(&Faults::default())).build().unwrap();
        Admin { api }
    }

    pub async fn exec(&self, sql: &str) {
        if let Err(e) = self.api.exec(sql).await {
            panic!("{sql}: {e}");
        }
    }

    /// Rows as text (`None` for NULL). Cast timestamps to VARCHAR in `sql`: a NULL timestamp
    /// breaks snowflake-api's Arrow decoding of fakesnow's answer.
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let result = self.api.exec(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out = Vec::new();
        match result {
            QueryResult::Empty => {}
            QueryResult::Json(j) => {
                for row in j.value.as_array().unwrap() {
                    out.push(
                        row.as_array()
                            .unwrap()
                            .iter()
                            .map(|c| match c {
                                Value::Null => None,
                                Value::String(s) => Some(s.clone()),
                                other => Some(other.to_string()),
                            })
                            .collect(),
                    );
                }
            }
            QueryResult::Arrow(batches) => {
                for batch in batches {
                    let options = FormatOptions::default();
                    let formatters: Vec<_> =
                        batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap()).collect();
                    for i in 0..batch.num_rows() {
                        out.push(
                            batch
                                .columns()
                                .iter()
                                .zip(&formatters)
                                .map(|(c, f)| (!c.is_null(i)).then(|| f.value(i).to_string()))
                                .collect(),
                        );
                    }
                }
            }
        }
        out
    }

    /// The single value of a one-row, one-column query.
    pub async fn value(&self, sql: &str) -> Option<String> {
        let rows = self.rows(sql).await;
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
        rows[0][0].clone()
    }
}

/// A fresh database and stage directory per test, so tests run in parallel.
pub struct Env {
    pub admin: Admin,
    pub database: String,
    pub stage_dir: tempfile::TempDir,
}

impl Env {
    pub async fn new() -> Env {
        let database = unique("SLUICE");
        let admin = Admin::connect(None);
        admin.exec(&format!("CREATE DATABASE {database}")).await;
        let admin = Admin::connect(Some(&database));
        Env { admin, database, stage_dir: tempfile::tempdir().unwrap() }
    }

    pub fn config(&self) -> SnowflakeConfig {
        SnowflakeConfig {
            account: "fakeacct".into(),
            user: "sluice".into(),
            auth: AuthConfig::Password { password: Secret("secret".into()) },
            warehouse: Some("WH".into()),
            database: self.database.clone(),
            schema: "EVENTS".into(),
            role: None,
            stage: StageConfig::Local { name: "SLUICE_STAGE".into(), path: self.stage_dir.path().into() },
            max_file_bytes: 1024 * 1024,
            gzip_level: 1,
            timeout_secs: 60,
            discards_table: sluice_destinations::snowflake::default_discards_table(),
        }
    }

    pub async fn destination(&self) -> SnowflakeDestination {
        SnowflakeDestination::with_client(self.config(), client(&Faults::default())).await.unwrap()
    }

    pub fn table(&self, table: &str) -> String {
        format!("{}.EVENTS.{table}", self.database)
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.admin.value(&format!("SELECT COUNT(*) FROM {}", self.table(table))).await.unwrap().parse().unwrap()
    }

    pub async fn columns(&self, table: &str) -> Vec<String> {
        let rows = self
            .admin
            .rows(&format!(
                "SELECT LOWER(column_name) FROM {}.information_schema.columns \
                 WHERE UPPER(table_schema) = 'EVENTS' AND UPPER(table_name) = '{}' ORDER BY 1",
                self.database,
                table.to_uppercase()
            ))
            .await;
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }
}
