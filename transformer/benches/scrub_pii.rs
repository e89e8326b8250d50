//! Throughput of `transforms/scrub_pii.rhai` over Mattermost-like chat events, bytes in to bytes
//! out (parse, script, serialise), one core. Besides the full chain, it measures the parts: the
//! conversion alone (a script returning the event untouched) so that the script's own share is
//! visible, and the granular version of the script (one helper call per step, as shipped before
//! the native `scrub_pii` helper) so that before and after are measured in the same sitting.
//!
//! Run: `CARGO_TARGET_DIR=/root/.cache/sluice/target cargo bench -p sluice-transformer --bench scrub_pii`

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use sluice_transformer::helpers::scrub::ScrubOptions;
use sluice_transformer::helpers::scrub_bytes::scrub_bytes;
use sluice_transformer::{Chain, Limits, Meta, Registry, TransformationConfig};

const WORDS: &[&str] = &[
    "deploy", "is", "green", "can", "you", "review", "the", "PR", "before", "lunch", "thanks",
    "ping", "me", "when", "ready", "standup", "moved", "to", "3pm", "incident", "resolved",
];

/// A mix like the reference workload: mostly posts (message text, a third of them with an email
/// inside), some reads and channel views, each with user traits and request context.
fn chat_events(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let user = format!("user{}", i % 500);
            let mut text: Vec<&str> = (0..(8 + i % 12)).map(|j| WORDS[(i * 7 + j * 3) % WORDS.len()]).collect();
            let email = format!("{}.{}@example.com", WORDS[i % WORDS.len()], i % 97);
            if i % 3 == 0 {
                text.insert(4, &email);
            }
            let (kind, properties) = match i % 10 {
                0..=5 => ("Post Created", json!({"post_id": format!("p{i}"), "channel_id": format!("c{}", i % 40),
                    "channel_type": "O", "team_id": "t1", "message": text.join(" "), "root_id": "",
                    "has_files": i % 7 == 0, "mentions": ["alice", "bob"]})),
                6..=8 => ("Posts Viewed", json!({"channel_id": format!("c{}", i % 40), "post_count": 20})),
                _ => ("Channel Joined", json!({"channel_id": format!("c{}", i % 40), "channel_name": "town-square"})),
            };
            let event = json!({
                "type": "track", "event": kind, "userId": user, "anonymousId": format!("anon-{i}"),
                "messageId": format!("5f2c1a34-9d1e-4c2b-8a6f-{i:012}"),
                "properties": properties,
                "context": {
                    "ip": format!("203.0.{}.{}", i % 256, (i * 13) % 256),
                    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 Mattermost/10.2.0",
                    "library": {"name": "mattermost-server", "version": "10.2.0"},
                    "locale": "en-US",
                    "traits": {"name": format!("User {i}"), "email": format!("{user}@corp.example.com"),
                               "username": user, "roles": "system_user"}
                },
                "timestamp": "2026-11-20T10:00:00.000Z", "sentAt": "2026-11-20T10:00:00.050Z",
                "receivedAt": "2026-11-20T10:00:00.120Z", "originalTimestamp": "2026-11-20T10:00:00.000Z"
            });
            serde_json::to_vec(&event).unwrap()
        })
        .collect()
}

/// transforms/scrub_pii.rhai before the native helper (same output, see tests/scrub_pii.rs).
const GRANULAR_SCRUB_PII: &str = r#"
fn transform(event, meta) {
    let key = meta.params.hmac_key;
    pseudonymize_emails(event, ["userId", "anonymousId", "previousId"], key);
    let fields = meta.params.fields ?? ["name", "first_name", "last_name", "full_name",
        "display_name", "nickname", "username", "email", "phone", "address"];
    let has_context = "context" in event;
    switch meta.params.mode ?? "mask" {
        "drop" => {
            event.traits.drop_keys(fields);
            event.properties.drop_keys(fields);
            if has_context { event.context.traits.drop_keys(fields); }
        }
        "hash" => {
            event.traits.hash_keys(fields, key);
            event.properties.hash_keys(fields, key);
            if has_context { event.context.traits.hash_keys(fields, key); }
        }
        _ => {
            let replacement = meta.params.replacement ?? "[redacted]";
            event.traits.mask_keys(fields, replacement);
            event.properties.mask_keys(fields, replacement);
            if has_context { event.context.traits.mask_keys(fields, replacement); }
        }
    }
    if meta.params.redact_text_emails ?? true {
        redact_emails_deep(event);
    }
    event
}
"#;

fn chain(id: &str, script: PathBuf) -> (Registry, Chain) {
    let config = TransformationConfig { id: id.into(), script, params: Default::default(), limits: Limits::default() };
    let registry = Registry::load(&[config]).expect("script compiles");
    let chain = registry.chain(&[id.to_string()]).unwrap();
    (registry, chain)
}

fn bench(c: &mut Criterion) {
    let events = chat_events(1000);
    let avg = events.iter().map(Vec::len).sum::<usize>() / events.len();
    eprintln!("{} events, {avg} bytes on average", events.len());
    // Read at run time, as the tests do (transformer/tests/common): a bench binary built from
    // another checkout sharing the target directory would otherwise read that checkout's scripts.
    let transforms = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo")).join("../transforms");
    let (_r1, scrub) = chain("scrub_pii", transforms.join("scrub_pii.rhai"));
    let noop_dir = tempfile::tempdir().unwrap();
    let noop_path = noop_dir.path().join("noop.rhai");
    std::fs::write(&noop_path, "fn transform(event, meta) { event }").unwrap();
    let (_r2, noop) = chain("noop", noop_path);
    // The parts of scrub_pii on their own, to see where its time goes.
    let mask_path = noop_dir.path().join("mask.rhai");
    std::fs::write(&mask_path, "fn transform(event, meta) {\n  let f = [\"name\", \"first_name\", \"last_name\", \"full_name\", \"display_name\", \"nickname\", \"username\", \"email\", \"phone\", \"address\"];\n  event.traits.mask_keys(f, \"[redacted]\");\n  event.properties.mask_keys(f, \"[redacted]\");\n  if \"context\" in event { event.context.traits.mask_keys(f, \"[redacted]\"); }\n  event\n}").unwrap();
    let (_r3, mask) = chain("mask", mask_path);
    let redact_path = noop_dir.path().join("redact.rhai");
    std::fs::write(&redact_path, "fn transform(event, meta) { redact_emails_deep(event); event }").unwrap();
    let (_r4, redact) = chain("redact", redact_path);
    // The shipped script with one read of a field: the event is converted into a Rhai map and
    // back (the only path before events could stay bytes; src/lazy.rs), same output values.
    let map_path = noop_dir.path().join("map.rhai");
    std::fs::write(&map_path, "fn transform(event, meta) { let t = event.type; scrub_pii(event, meta.params); event }").unwrap();
    let (_r6, map_scrub) = chain("map", map_path);
    let granular_path = noop_dir.path().join("granular.rhai");
    std::fs::write(&granular_path, GRANULAR_SCRUB_PII).unwrap();
    let (_r5, granular) = chain("granular", granular_path);

    // Fixed work instead of criterion, for `perf stat` / `perf record`: instruction counts are
    // stable on this shared, noisy machine where timings are not.
    // SLUICE_BENCH_FIXED=scrub_pii:200 runs 200 passes over the 1,000 events and exits (names:
    // scrub_pii, scrub_pii_map_path, scrub_pii_granular_script, noop_script, scrub_bytes_only, anything else = conversion only).
    if let Ok(spec) = std::env::var("SLUICE_BENCH_FIXED") {
        let (name, passes) = spec.split_once(':').unwrap_or((&spec, "100"));
        let passes: usize = passes.parse().expect("SLUICE_BENCH_FIXED=name:passes");
        let named = [
            ("scrub_pii", &scrub),
            ("scrub_pii_map_path", &map_scrub),
            ("scrub_pii_granular_script", &granular),
            ("noop_script", &noop),
        ];
        // Each pass is timed on its own: the fastest passes are the ones other processes
        // disturbed least, so the report gives the median and the best.
        let default_options = ScrubOptions::default();
        let mut secs = Vec::with_capacity(passes);
        for _ in 0..passes {
            let start = std::time::Instant::now();
            for e in &events {
                let n = match named.iter().find(|(n, _)| *n == name) {
                    Some((_, chain)) => chain.apply(e, &Meta::new("chat-core", "warehouse", "")).unwrap().len(),
                    // The byte rewrite alone, without the Rhai call around it.
                    None if name == "scrub_bytes_only" => scrub_bytes(e, &default_options).map_or(0, |o| o.0.len()),
                    None => {
                        let v = sluice_transformer::convert::event_from_json(e).unwrap();
                        sluice_transformer::convert::event_to_json(&v).len()
                    }
                };
                std::hint::black_box(n);
            }
            secs.push(start.elapsed().as_secs_f64());
        }
        secs.sort_by(f64::total_cmp);
        let rate = |s: f64| events.len() as f64 / s;
        eprintln!("{name}: {passes} passes of {} events: median {:.0} events/s, best {:.0} events/s",
            events.len(), rate(secs[passes / 2]), rate(secs[0]));
        std::process::exit(0);
    }

    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(events.len() as u64));
    for (name, chain) in [
        ("scrub_pii", &scrub),
        ("scrub_pii_map_path", &map_scrub),
        ("scrub_pii_granular_script", &granular),
        ("noop_script", &noop),
        ("part_mask_keys_x3", &mask),
        ("part_redact_emails_deep", &redact),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut out = 0;
                for e in &events {
                    let meta = Meta::new("chat-core", "warehouse", "");
                    out += chain.apply(e, &meta).unwrap().len();
                }
                out
            })
        });
    }
    group.bench_function("json_parse_serialize_only", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for e in &events {
                let v = sluice_transformer::convert::event_from_json(e).unwrap();
                bytes += sluice_transformer::convert::event_to_json(&v).len();
            }
            bytes
        })
    });
    // The conversion the crate used before its own parser and writer: serde_json driving
    // rhai's serde support.
    group.bench_function("json_parse_serialize_serde", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for e in &events {
                let v: rhai::Dynamic = serde_json::from_slice(e).unwrap();
                bytes += serde_json::to_vec(&v).unwrap().len();
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
