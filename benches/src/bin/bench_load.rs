//! Open-loop load for the end-to-end benchmark: sends a request body at a fixed rate of events
//! per second (wrk keeps as many requests in flight as it can, which measures the ceiling but
//! cannot show whether a pipeline *sustains* a rate with bounded lag). Once a second it prints
//! what was sent and acknowledged, and — when given Sluice's /metrics URL and PID — what the
//! destinations delivered, their lag and the server's RSS. Ends with a SUMMARY line.
//!
//! Usage: bench-load URL BODY_FILE EVENTS_PER_REQUEST EVENTS_PER_SEC SECONDS
//!        [--concurrency N] [--write-key K] [--metrics URL] [--pid PID]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

struct Args {
    url: String,
    body: bytes::Bytes,
    per_request: u64,
    rate: u64,
    seconds: u64,
    concurrency: usize,
    write_key: String,
    metrics: Option<String>,
    pid: Option<u32>,
}

fn parse_args() -> Result<Args, String> {
    let mut positional = Vec::new();
    let mut args = Args {
        url: String::new(),
        body: bytes::Bytes::new(),
        per_request: 0,
        rate: 0,
        seconds: 0,
        concurrency: 64,
        write_key: "bench-key".into(),
        metrics: None,
        pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--concurrency" => args.concurrency = value()?.parse().map_err(|e| format!("--concurrency: {e}"))?,
            "--write-key" => args.write_key = value()?,
            "--metrics" => args.metrics = Some(value()?),
            "--pid" => args.pid = Some(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            _ => positional.push(a),
        }
    }
    let [url, body, per, rate, secs]: [String; 5] =
        positional.try_into().map_err(|_| "usage: bench-load URL BODY_FILE EVENTS_PER_REQUEST EVENTS_PER_SEC SECONDS [--concurrency N] [--write-key K] [--metrics URL] [--pid PID]".to_string())?;
    args.url = url;
    args.body = std::fs::read(&body).map_err(|e| format!("{body}: {e}"))?.into();
    args.per_request = per.parse().map_err(|e| format!("EVENTS_PER_REQUEST: {e}"))?;
    args.rate = rate.parse().map_err(|e| format!("EVENTS_PER_SEC: {e}"))?;
    args.seconds = secs.parse().map_err(|e| format!("SECONDS: {e}"))?;
    Ok(args)
}

/// Sum of every sample of a Prometheus metric family (all label sets).
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // One thread: the generator shares the machine with the server it measures.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(run(args));
}

async fn run(args: Args) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build().unwrap();
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.write_key)));
    let counters = Arc::new(Counters::default());
    let permits = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let period = Duration::from_secs_f64(args.per_request as f64 / args.rate as f64);
    let mut ticker = tokio::time::interval(period);
    // A late tick fires at once and the schedule stays anchored, so the average rate holds.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);

    let reporter = tokio::spawn(report(args.metrics.clone(), args.pid, args.per_request, counters.clone(), args.seconds));
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    while Instant::now() < end {
        ticker.tick().await;
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Every connection is busy: the server is not keeping up with the asked rate.
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let (client, counters, url, body, auth) = (client.clone(), counters.clone(), args.url.clone(), args.body.clone(), auth.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let res = client.post(url).header("authorization", auth).header("content-type", "application/json").body(body).send().await;
            let ok = matches!(&res, Ok(r) if r.status().is_success());
            if ok { &counters.ok } else { &counters.failed }.fetch_add(1, Ordering::Relaxed);
            counters.latencies_us.lock().unwrap().push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            drop(permit);
        });
    }
    // Let in-flight requests finish before the totals are taken.
    let _ = permits.acquire_many(args.concurrency as u32).await;
    let elapsed = start.elapsed().as_secs_f64();
    let (drained, final_lag) = reporter.await.unwrap();
    let mut lat = std::mem::take(&mut *counters.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let pct = |p: f64| lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).map_or(0.0, |&v| f64::from(v) / 1000.0);
    let ok = counters.ok.load(Ordering::Relaxed);
    println!(
        "SUMMARY asked_eps={} acked_eps={:.0} acked_events={} failed_requests={} skipped_requests={} p50_ms={:.2} p99_ms={:.2} drained_after_s={} final_lag_events={}",
        args.rate,
        (ok * args.per_request) as f64 / elapsed,
        ok * args.per_request,
        counters.failed.load(Ordering::Relaxed),
        counters.skipped.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99),
        drained.map_or("never".into(), |s| format!("{s:.1}")),
        final_lag,
    );
}

/// Prints one line a second while the load runs, then waits (up to 120 s) for the destinations
/// to drain. Returns how long the drain took and the lag left.
async fn report(metrics: Option<String>, pid: Option<u32>, per_request: u64, c: Arc<Counters>, seconds: u64) -> (Option<f64>, f64) {
    let http = reqwest::Client::new();
    let scrape = |url: Option<String>| {
        let http = http.clone();
        async move {
            let text = http.get(url?).send().await.ok()?.text().await.ok()?;
            Some((metric_sum(&text, "sluice_destination_delivered_total"), metric_sum(&text, "sluice_destination_lag_events")))
        }
    };
    let mut last_ok = 0;
    let mut last_delivered = scrape(metrics.clone()).await.map_or(0.0, |m| m.0);
    let mut max_rss: f64 = 0.0;
    let mut max_lag: f64 = 0.0;
    println!("second  acked_eps  delivered_eps  lag_events  rss_mb");
    for s in 1..=seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ok = c.ok.load(Ordering::Relaxed);
        let (delivered, lag) = scrape(metrics.clone()).await.unwrap_or((0.0, 0.0));
        let rss = pid.and_then(rss_mb).unwrap_or(0.0);
        max_rss = max_rss.max(rss);
        max_lag = max_lag.max(lag);
        println!("{s:>6}  {:>9}  {:>13.0}  {lag:>10.0}  {rss:>6.0}", (ok - last_ok) * per_request, delivered - last_delivered);
        last_ok = ok;
        last_delivered = delivered;
    }
    println!("MAX rss_mb={max_rss:.0} lag_events={max_lag:.0}");
    if metrics.is_none() {
        return (None, 0.0);
    }
    let t = Instant::now();
    let mut lag = f64::MAX;
    while t.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lag = scrape(metrics.clone()).await.map_or(lag, |m| m.1);
        if lag == 0.0 {
            return (Some(t.elapsed().as_secs_f64()), 0.0);
        }
    }
    (None, lag)
}
