//! Writes the request bodies the benchmarks send: `single.json`, one chat `track` event of about
//! 790 bytes, and `batch.json`, a `/v1/batch` body of 100 such events (~80 KB) from 100 different
//! users, so per-user lanes downstream see a realistic spread. Each event carries a name and an
//! email in `context.traits` and an email in the message text, so `scrub_pii` has real work to do
//! in the end-to-end run.
//!
//! Usage: `bench-payloads OUT_DIR`

use serde_json::json;

fn event(i: usize) -> serde_json::Value {
    json!({
        "type": "track",
        "event": "Post Created",
        "userId": format!("user-{:06}", i * 7919 % 30_000),
        "anonymousId": format!("anon-{i:08x}-6f1c-4c1e-9a55-2b1d3c4e5f60"),
        "messageId": format!("bench-{i:08}-0000-4000-8000-000000000000"),
        "timestamp": "2026-11-22T09:30:00.000Z",
        "properties": {
            "channel_id": format!("chan-{:04}", i % 500),
            "team_id": "team-0042",
            "post_length": 120 + i % 80,
            "has_attachment": i.is_multiple_of(5),
            "mentions": i % 3,
            "message": format!("ping @ops about ticket {i}, or mail oncall{i}@bank.example.com"),
        },
        "context": {
            "library": { "name": "sluice-rust", "version": "0.1.0" },
            "app": { "name": "chat-core", "version": "9.3.1", "build": "2026.11.20" },
            "os": { "name": "Linux", "version": "6.1" },
            "locale": "en-GB",
            "traits": {
                "name": "Jane Q. Example",
                "email": format!("first.last{i}@bank.example.com"),
                "username": format!("jexample{i}"),
                "roles": "system_user",
            },
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        },
    })
}

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir)?;
    let single = serde_json::to_vec(&event(0))?;
    let batch = serde_json::to_vec(&json!({ "batch": (0..100).map(event).collect::<Vec<_>>() }))?;
    std::fs::write(dir.join("single.json"), &single)?;
    std::fs::write(dir.join("batch.json"), &batch)?;
    println!("single.json {} bytes, batch.json {} bytes (100 events)", single.len(), batch.len());
    Ok(())
}
