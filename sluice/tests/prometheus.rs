//! A real Prometheus (Debian's, installed by scripts/prometheus.sh) scrapes a real `sluice run`
//! on its admin listener every second, with the shipped rules loaded. After a known amount of
//! traffic, PromQL answers match it exactly, and every query of every panel of the shipped
//! Grafana dashboard returns data: a panel with a wrong metric name or a broken expression fails
//! here.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{admin_url, free_port, start_healthy, write_config, Killed};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).parent().unwrap().to_path_buf()
}

fn prometheus_binary() -> String {
    let bin = std::env::var("SLUICE_TEST_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let found = Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    assert!(found.is_ok_and(|s| s.success()), "no prometheus binary ({bin}): run `bash scripts/prometheus.sh install` (scripts/test.sh does)");
    bin
}

struct Prom {
    url: String,
    client: reqwest::blocking::Client,
}

impl Prom {
    /// The result vector of an instant query; panics on a query error, naming the query.
    fn query(&self, q: &str) -> Vec<Value> {
        let r: Value = self.client.get(format!("{}/api/v1/query", self.url)).query(&[("query", q)]).send().unwrap().json().unwrap();
        assert_eq!(r["status"], "success", "query failed: {q}\n{r}");
        r["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Value of a query that must return exactly one sample.
    fn scalar(&self, q: &str) -> Option<f64> {
        let result = self.query(q);
        (result.len() == 1).then(|| result[0]["value"][1].as_str().unwrap().parse().unwrap())
    }

    fn wait(&self, what: &str, q: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = None;
        while Instant::now() < deadline {
            last = self.scalar(q);
            if last == Some(want) {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: {q} is {last:?}, want {want}");
    }
}

fn send(port: u16, key: &str, body: Value) -> u16 {
    reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/batch"))
        .basic_auth(key, Some(""))
        .json(&body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

fn batch(kind: &str, n: usize) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| match kind {
            "track" => serde_json::json!({"type": "track", "userId": format!("u{i}"), "event": "Prom Test"}),
            _ => serde_json::json!({"type": "identify", "userId": format!("u{i}"), "traits": {"plan": "pro"}}),
        })
        .collect();
    serde_json::json!({ "batch": events })
}

#[test]
fn prometheus_answers_match_the_traffic_and_every_dashboard_panel_returns_data() {
    let bin = prometheus_binary();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port);
    let log = dir.path().join("sluice.log");
    let _sluice = start_healthy(&config, port, &log);
    let admin = admin_url(&config);

    let prom_port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules}]\nscrape_configs:\n  - job_name: sluice\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = repo().join("config/prometheus/sluice.rules.yml").display(),
            target = admin.trim_start_matches("http://"),
        ),
    )
    .unwrap();
    let prom_log = fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let prom = Killed(
        Command::new(bin)
            .arg(format!("--config.file={}", prom_config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(prom_log.try_clone().unwrap()))
            .stderr(Stdio::from(prom_log))
            .spawn()
            .expect("start prometheus"),
    );
    let p = Prom {
        url: format!("http://127.0.0.1:{prom_port}"),
        client: reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
    };
    // Scraping before the traffic, so the rates over the last minute see it arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !p.client.get(format!("{}/-/ready", p.url)).send().is_ok_and(|r| r.status().is_success()) {
        assert!(Instant::now() < deadline, "prometheus not ready: {}", fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default());
        thread::sleep(Duration::from_millis(200));
    }
    p.wait("first scrape", r#"up{job="sluice"}"#, 1.0);

    // Known traffic: 25 track + 5 identify events accepted; 2 unknown keys, 1 invalid batch.
    for _ in 0..5 {
        assert_eq!(send(port, "test-key", batch("track", 5)), 200);
    }
    assert_eq!(send(port, "test-key", batch("identify", 5)), 200);
    assert_eq!(send(port, "nobody", batch("track", 1)), 401);
    assert_eq!(send(port, "nobody", batch("track", 1)), 401);
    assert_eq!(send(port, "test-key", serde_json::json!({"batch": [{"type": "track", "event": "no user"}]})), 400);

    p.wait("delivered", r#"sum(sluice_destination_delivered_total{destination="out"})"#, 30.0);
    assert_eq!(p.scalar("sum(sluice_events_received_total)"), Some(30.0));
    assert_eq!(p.scalar(r#"sum(sluice_events_received_total{source="web",type="track"})"#), Some(25.0));
    assert_eq!(p.scalar(r#"sum(sluice_events_received_total{source="web",type="identify"})"#), Some(5.0));
    assert_eq!(p.scalar(r#"sluice_requests_rejected_total{reason="unknown_write_key"}"#), Some(2.0));
    assert_eq!(p.scalar(r#"sluice_requests_rejected_total{reason="invalid_event"}"#), Some(1.0));
    assert_eq!(p.scalar(r#"sluice_requests_rejected_total{reason="log_full"}"#), Some(0.0), "series exist at 0");
    assert_eq!(p.scalar("sluice_log_next_offset"), Some(30.0));
    assert_eq!(p.scalar(r#"sum(sluice_destination_dead_lettered_total{destination="out"})"#), Some(0.0));
    assert_eq!(p.scalar("sum(sluice_request_duration_seconds_count)"), Some(6.0), "six requests answered 200");
    p.wait("lag", r#"sluice_destination_lag_events{destination="out"}"#, 0.0);
    // The recording rules are loaded and evaluate.
    let deadline = Instant::now() + Duration::from_secs(30);
    let q = r#"source:sluice_events_received:rate5m{source="web"} > 0"#;
    while p.scalar(q).is_none() {
        assert!(Instant::now() < deadline, "the recording rule gives nothing: {q}");
        thread::sleep(Duration::from_millis(200));
    }
    // No alert fires on a healthy pipeline.
    assert!(p.query("ALERTS").is_empty(), "{:?}", p.query("ALERTS"));

    let dashboard: Value = serde_json::from_str(&fs::read_to_string(repo().join("config/grafana/dashboards/sluice.json")).unwrap()).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = panel["title"].as_str().unwrap();
        assert!(panel["fieldConfig"]["defaults"]["unit"].is_string(), "panel {title} has no unit");
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let q = expr.replace("$__rate_interval", "1m").replace("$destination", ".*").replace("$source", ".*");
            assert!(!q.contains('$'), "panel {title}: a variable left unsubstituted: {q}");
            let result = p.query(&q);
            assert!(!result.is_empty(), "panel {title:?} returns no data: {q}");
            let finite = result.iter().any(|s| s["value"][1].as_str().unwrap().parse::<f64>().is_ok_and(f64::is_finite));
            assert!(finite, "panel {title:?} returns no number: {q}\n{result:?}");
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} panel queries");
    // The template variables list the source and the destination.
    for var in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let query = var["query"]["query"].as_str().unwrap();
        let (metric, label) = query.trim_start_matches("label_values(").trim_end_matches(')').split_once(", ").unwrap();
        let r: Value = p.client.get(format!("{}/api/v1/label/{label}/values", p.url)).query(&[("match[]", metric)]).send().unwrap().json().unwrap();
        assert!(!r["data"].as_array().unwrap().is_empty(), "variable {} lists nothing: {query}", var["name"]);
    }
    println!("{checked} panel queries returned data");
    drop(prom);
}
