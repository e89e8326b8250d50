//! Compatibility: the official Python SDKs (rudder-sdk-python, segment-analytics-python)
//! talk to Sluice unmodified, and every call they make lands in the files destination.

mod common;

use common::{delivered_events, free_port, start_healthy, write_config, Killed};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn python() -> PathBuf {
    let py = std::env::var_os("SLUICE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME not set");
            PathBuf::from(home).join(".cache/sluice/venv/bin/python")
        });
    if !py.exists() {
        panic!(
            "Python with the SDKs not found at {}: run scripts/backends.sh start",
            py.display()
        );
    }
    py
}

struct Server {
    _child: Killed,
    port: u16,
    out_dir: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let out_dir = dir.path().join("out");
        let config = write_config(dir.path(), port);
        let log = dir.path().join("sluice.log");
        let child = start_healthy(&config, port, &log);
        Server { _child: child, port, out_dir, log, _dir: dir }
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

const SCRIPT: &str = r#"
import importlib, sys
modname, url, prefix, n_batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
analytics = importlib.import_module(modname)
errors = []
def on_error(error, items):
    errors.append(repr(error))
analytics.write_key = 'test-key'
if modname.startswith('rudderstack'):
    analytics.dataPlaneUrl = url
else:
    analytics.host = url
analytics.on_error = on_error
analytics.max_retries = 3
m = {'marker': prefix}
analytics.identify(user_id=prefix + '-u-identify', traits={'email': 'a@example.com', 'marker': prefix},
                   message_id=prefix + '-identify')
analytics.track(user_id=prefix + '-u-track', event='Single Track', properties=m,
                message_id=prefix + '-track-single')
analytics.page(user_id=prefix + '-u-page', category='Docs', name='Home', properties=m,
               message_id=prefix + '-page')
analytics.screen(user_id=prefix + '-u-screen', name='Main', properties=m,
                 message_id=prefix + '-screen')
analytics.group(user_id=prefix + '-u-group', group_id=prefix + '-g1', traits=m,
                message_id=prefix + '-group')
analytics.alias(previous_id=prefix + '-anon', user_id=prefix + '-u-alias',
                message_id=prefix + '-alias')
for i in range(n_batch):
    analytics.track(user_id='%s-u-batch-%d' % (prefix, i % 7), event='Batch Track',
                    properties={'marker': prefix, 'i': i}, message_id='%s-batch-%03d' % (prefix, i))
analytics.flush()
analytics.shutdown()
if errors:
    print('SDK errors: %r' % errors, file=sys.stderr)
    sys.exit(3)
print('sent %d calls' % (6 + n_batch))
"#;

const N_BATCH: usize = 150;

fn run_sdk_and_check(module: &str, tag: &str) {
    let py = python();
    let server = Server::start();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("{tag}-{nanos}");
    let script_dir = tempfile::tempdir().unwrap();
    let script = script_dir.path().join("send.py");
    fs::write(&script, SCRIPT).unwrap();

    let url = format!("http://127.0.0.1:{}", server.port);
    let mut child = Command::new(&py)
        .arg(&script)
        .arg(module)
        .arg(&url)
        .arg(&prefix)
        .arg(N_BATCH.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    // Bound the SDK run.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{module} script failed ({}):\nstdout: {stdout}\nstderr: {stderr}\nserver log:\n{}",
        out.status,
        server.log_text()
    );

    // messageId -> expected type
    let mut expected: HashMap<String, &str> = HashMap::new();
    for (suffix, ty) in [
        ("identify", "identify"),
        ("track-single", "track"),
        ("page", "page"),
        ("screen", "screen"),
        ("group", "group"),
        ("alias", "alias"),
    ] {
        expected.insert(format!("{prefix}-{suffix}"), ty);
    }
    for i in 0..N_BATCH {
        expected.insert(format!("{prefix}-batch-{i:03}"), "track");
    }

    let poll_deadline = Instant::now() + Duration::from_secs(30);
    let mut found: HashMap<String, serde_json::Value>;
    loop {
        found = HashMap::new();
        for ev in delivered_events(&server.out_dir) {
            if let Some(id) = ev.get("messageId").and_then(|v| v.as_str()) {
                if expected.contains_key(id) {
                    found.insert(id.to_string(), ev);
                }
            }
        }
        if found.len() == expected.len() || Instant::now() >= poll_deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }

    let missing: Vec<&String> = expected.keys().filter(|k| !found.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{module}: {} of {} events missing (e.g. {:?}); server log:\n{}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(10)],
        server.log_text()
    );

    // Every event has the right type, and counts per type match.
    let mut per_type: HashMap<String, usize> = HashMap::new();
    for (id, ev) in &found {
        let ty = ev.get("type").and_then(|v| v.as_str()).unwrap_or("");
        assert_eq!(ty, expected[id], "{module}: wrong type for {id}: {ev}");
        *per_type.entry(ty.to_string()).or_default() += 1;
    }
    eprintln!("{module}: delivered per type: {per_type:?}");
    let want: HashMap<String, usize> = [
        ("track", N_BATCH + 1),
        ("identify", 1),
        ("page", 1),
        ("screen", 1),
        ("group", 1),
        ("alias", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(per_type, want, "{module}: per-type counts");

    // Spot-check that payload fields survive.
    let get = |suffix: &str| &found[&format!("{prefix}-{suffix}")];
    let s = |v: &serde_json::Value, ptr: &str| v.pointer(ptr).and_then(|x| x.as_str()).map(String::from);
    assert_eq!(s(get("track-single"), "/event").as_deref(), Some("Single Track"));
    assert_eq!(s(get("track-single"), "/properties/marker"), Some(prefix.clone()));
    assert_eq!(s(get("identify"), "/userId"), Some(format!("{prefix}-u-identify")));
    assert_eq!(s(get("identify"), "/traits/marker").or(s(get("identify"), "/context/traits/marker")), Some(prefix.clone()));
    assert_eq!(s(get("group"), "/groupId"), Some(format!("{prefix}-g1")));
    assert_eq!(s(get("alias"), "/previousId"), Some(format!("{prefix}-anon")));
    assert_eq!(s(get("alias"), "/userId"), Some(format!("{prefix}-u-alias")));
    let batch_markers: HashSet<i64> = found
        .iter()
        .filter(|(id, _)| id.contains("-batch-"))
        .filter(|(_, ev)| s(ev, "/properties/marker") == Some(prefix.clone()))
        .filter_map(|(_, ev)| ev.pointer("/properties/i").and_then(|v| v.as_i64()))
        .collect();
    assert_eq!(batch_markers.len(), N_BATCH, "{module}: batch track properties");
    eprintln!("{module}: all {} expected events delivered", expected.len());
}

#[test]
fn rudder_sdk_python_single_calls_and_batches_land() {
    run_sdk_and_check("rudderstack.analytics", "rudder");
}

#[test]
fn segment_analytics_python_lands() {
    run_sdk_and_check("segment.analytics", "segment");
}
