//! Shared test helpers: scripts written to a temp dir, events as `serde_json::Value`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sluice_transformer::{Chain, Limits, Meta, Registry, TransformError, TransformationConfig};

/// The repository's `transforms/` directory. `CARGO_MANIFEST_DIR` is read when the test runs, not
/// baked in when it is compiled: a test binary built from another checkout sharing the same target
/// directory would otherwise read that checkout's scripts.
pub fn transforms_dir() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../transforms")
}

pub struct Scripts {
    pub dir: tempfile::TempDir,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts { dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn write(&self, name: &str, source: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, source).expect("write script");
        path
    }

    pub fn config(&self, id: &str, source: &str) -> TransformationConfig {
        config(id, &self.write(&format!("{id}.rhai"), source))
    }
}

pub fn config(id: &str, path: &Path) -> TransformationConfig {
    TransformationConfig {
        id: id.to_string(),
        script: path.to_path_buf(),
        params: Default::default(),
        limits: Limits::default(),
    }
}

/// A one-script chain.
pub fn chain_of(id: &str, source: &str) -> (Scripts, Registry, Chain) {
    let scripts = Scripts::new();
    let registry = Registry::load(&[scripts.config(id, source)]).expect("script compiles");
    let chain = registry.chain(&[id.to_string()]).expect("chain");
    (scripts, registry, chain)
}

pub fn meta() -> Meta<'static> {
    Meta::new("src-web", "dest-warehouse", "m-1").with_write_key_id("wk-1")
}

pub fn apply(chain: &Chain, event: &Value) -> Result<Vec<Value>, TransformError> {
    let bytes = serde_json::to_vec(event).unwrap();
    let out = chain.apply(&bytes, &meta())?;
    Ok(out.iter().map(|b| serde_json::from_slice(b).unwrap()).collect())
}

/// A Mattermost-like "Post Created" event.
pub fn post_event() -> Value {
    json!({
        "type": "track", "event": "Post Created", "userId": "u1", "anonymousId": "a1",
        "messageId": "m-1",
        "properties": {"post_id": "p1", "channel_id": "c1",
                       "message": "hello bob@example.com, see you"},
        "context": {"ip": "203.0.113.77", "userAgent": "Mattermost/10.2",
                    "traits": {"email": "alice@example.com", "name": "Alice"}},
        "timestamp": "2026-11-20T10:00:00Z"
    })
}
