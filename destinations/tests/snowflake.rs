//! The Snowflake destination against a real fakesnow server (SQL half: create, stage, COPY INTO,
//! MERGE, ALTER, discards) and a real moto server (the S3 stage's upload half).
//! Start both with `scripts/backends.sh start`; the tests fail, not skip, when they are down.

#[path = "support/fakesnow.rs"]
mod fakesnow;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use sluice_destinations::snowflake::{AuthConfig, Secret, SnowflakeConfig, SnowflakeDestination, StageConfig};
use sluice_destinations::{Batch, Destination, OutEvent, SinkConfig};

use fakesnow::{Admin, Faults};

/// A fresh database and stage directory per test, so tests run in parallel.
struct Env {
    admin: Admin,
    database: String,
    stage_dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        let database = fakesnow::unique("SLUICE");
        let admin = Admin::connect(None);
        admin.exec(&format!("CREATE DATABASE {database}")).await;
        let admin = Admin::connect(Some(&database));
        Env { admin, database, stage_dir: tempfile::tempdir().unwrap() }
    }

    fn config(&self) -> SnowflakeConfig {
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
        }
    }

    async fn destination(&self) -> SnowflakeDestination {
        SnowflakeDestination::with_client(self.config(), fakesnow::client(&Faults::default())).await.unwrap()
    }

    fn table(&self, table: &str) -> String {
        format!("{}.EVENTS.{table}", self.database)
    }

    async fn count(&self, table: &str) -> i64 {
        self.admin.value(&format!("SELECT COUNT(*) FROM {}", self.table(table))).await.unwrap().parse().unwrap()
    }

    async fn columns(&self, table: &str) -> Vec<String> {
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

const T0: &str = "2024-05-01T10:00:00.000Z";
const T1: &str = "2024-05-01T11:00:00.000Z";

fn batch(first_offset: u64, events: &[Value]) -> Batch {
    Batch {
        destination: Arc::from("warehouse"),
        events: events
            .iter()
            .enumerate()
            .map(|(i, e)| OutEvent {
                offset: first_offset + i as u64,
                source: Arc::from("web"),
                json: e.to_string().into_bytes().into(),
            })
            .collect(),
    }
}

fn track(id: &str, event: &str, properties: Value) -> Value {
    json!({"type": "track", "messageId": id, "anonymousId": "anon-1", "userId": "u1", "event": event,
        "receivedAt": T0, "sentAt": T0, "timestamp": T0, "originalTimestamp": T0,
        "context": {"library": {"name": "analytics.js", "version": "2.1"}, "ip": "10.0.0.1"},
        "properties": properties})
}

fn identify(id: &str, user: &str, received_at: &str, traits: Value) -> Value {
    json!({"type": "identify", "messageId": id, "userId": user, "receivedAt": received_at, "traits": traits})
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_type_lands_in_its_tables() {
    let env = Env::new().await;
    let dest = env.destination().await;
    let events = [
        track("t1", "Order Completed", json!({"total": 9.5, "currency": "EUR", "items": [{"sku": "a"}]})),
        track("t2", "Signed Up", json!({"plan": "pro"})),
        identify("i1", "u1", T0, json!({"email": "a@example.com", "age": 30})),
        json!({"type": "page", "messageId": "p1", "anonymousId": "anon-1", "name": "Home", "receivedAt": T0,
            "properties": {"url": "https://example.com/", "path": "/"}}),
        json!({"type": "screen", "messageId": "s1", "userId": "u1", "name": "Settings", "receivedAt": T0,
            "properties": {"dark_mode": true}}),
        json!({"type": "group", "messageId": "g1", "userId": "u1", "groupId": "acme", "receivedAt": T0,
            "traits": {"employees": 120}}),
        json!({"type": "alias", "messageId": "a1", "userId": "u1", "previousId": "anon-1", "receivedAt": T0}),
    ];
    let delivered = dest.deliver(&batch(0, &events)).await.unwrap();
    assert!(delivered.rejected.is_empty(), "{:?}", delivered.rejected);

    for (table, rows) in [
        ("tracks", 2),
        ("order_completed", 1),
        ("signed_up", 1),
        ("identifies", 1),
        ("users", 1),
        ("pages", 1),
        ("screens", 1),
        ("groups", 1),
        ("aliases", 1),
    ] {
        assert_eq!(env.count(table).await, rows, "rows in {table}");
    }
    let order = env.columns("order_completed").await;
    for column in ["id", "anonymous_id", "user_id", "received_at", "sent_at", "timestamp", "original_timestamp",
        "uuid_ts", "event", "event_text", "context_library_name", "context_ip", "total", "currency", "items"]
    {
        assert!(order.contains(&column.to_string()), "order_completed lacks {column}: {order:?}");
    }
    assert!(!env.columns("tracks").await.contains(&"total".to_string()), "tracks has no properties");

    let row = env
        .admin
        .rows(&format!(
            "SELECT id, event, event_text, context_library_name, total, currency, \
             CAST(received_at AS VARCHAR) FROM {}",
            env.table("order_completed")
        ))
        .await;
    let row = &row[0];
    assert_eq!(row[0].as_deref(), Some("t1"));
    assert_eq!(row[1].as_deref(), Some("order_completed"));
    assert_eq!(row[2].as_deref(), Some("Order Completed"));
    assert_eq!(row[3].as_deref(), Some("analytics.js"));
    assert_eq!(row[4].as_deref(), Some("9.5"));
    assert_eq!(row[5].as_deref(), Some("EUR"));
    assert!(row[6].as_deref().unwrap().starts_with("2024-05-01"), "{row:?}");

    assert_eq!(
        env.admin.value(&format!("SELECT email FROM {} WHERE id = 'u1'", env.table("users"))).await.as_deref(),
        Some("a@example.com")
    );
    assert_eq!(
        env.admin.value(&format!("SELECT previous_id FROM {}", env.table("aliases"))).await.as_deref(),
        Some("anon-1")
    );
    assert_eq!(
        env.admin.value(&format!("SELECT employees FROM {}", env.table("groups"))).await.as_deref(),
        Some("120")
    );
    assert_eq!(
        env.admin.value(&format!("SELECT CAST(dark_mode AS VARCHAR) FROM {}", env.table("screens"))).await.as_deref(),
        Some("true")
    );
    // Staged files are removed once loaded.
    let leftovers: Vec<_> = walk(env.stage_dir.path());
    assert!(leftovers.is_empty(), "staged files left behind: {leftovers:?}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
