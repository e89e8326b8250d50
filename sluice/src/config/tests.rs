use super::*;

const GOOD: &str = r#"
data_dir: ${DATA:-/tmp/sluice-test}
collector:
  listen: ${LISTEN:-127.0.0.1:8080}
sources:
  - id: web
    write_keys: ["${KEY}"]
destinations:
  - id: archive
    sink:
      type: files
      path: /tmp/out
"#;

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
}

#[test]
fn variables_and_defaults_are_substituted() {
    let c = parse(GOOD, "t.yaml", env(&[("KEY", "k1"), ("LISTEN", "127.0.0.1:9999")])).unwrap();
    assert_eq!(c.sources[0].write_keys, ["k1"]);
    assert_eq!(c.collector.listen, "127.0.0.1:9999");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/sluice-test"));
    assert_eq!(c.log.dir, PathBuf::from("/tmp/sluice-test/log"));
}

#[test]
fn a_missing_variable_names_itself_and_its_line() {
    let e = parse(GOOD, "t.yaml", env(&[])).unwrap_err().to_string();
    assert_eq!(e, "t.yaml:7: environment variable KEY is not set (write ${KEY:-default} to give a default)");
}

#[test]
fn dollar_dollar_is_a_literal_dollar_and_comments_are_not_interpolated() {
    let out = interpolate("a: $$HOME\n# b: ${NOPE}\n", "t", env(&[])).unwrap();
    assert_eq!(out, "a: $HOME\n# b: ${NOPE}\n");
}

#[test]
fn an_unknown_key_is_refused_with_its_path_and_line() {
    let text = GOOD.replace("      path: /tmp/out", "      path: /tmp/out\n      pth: typo");
    let e = parse(&text, "t.yaml", env(&[("KEY", "k")])).unwrap_err().to_string();
    assert!(e.contains("unknown field `pth`"), "{e}");
    // The tagged `sink` enum is reported at its destination entry (line 9).
    assert!(e.contains("line 9"), "{e}");
    assert!(e.contains("destinations[0]"), "{e}");
}

#[test]
fn invalid_yaml_is_refused_with_a_line() {
    let e = parse("data_dir: [unclosed\n", "t.yaml", env(&[])).unwrap_err().to_string();
    assert!(e.starts_with("t.yaml: "), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn semantic_errors_point_at_the_entry() {
    let text = GOOD.replace("  - id: archive\n", "  - id: archive\n    transformations: [nope]\n");
    let e = parse(&text, "t.yaml", env(&[("KEY", "k")])).unwrap_err().to_string();
    assert_eq!(
        e,
        "t.yaml:9: destinations: archive uses transformation \"nope\", which is not defined under transformations:"
    );
    let text = GOOD.replace("127.0.0.1:8080", "not-an-address");
    let e = parse(&text, "t.yaml", env(&[("KEY", "k")])).unwrap_err().to_string();
    assert!(e.starts_with("t.yaml:4: collector: listen \"not-an-address\""), "{e}");
}

#[test]
fn the_shipped_config_is_valid() {
    // Read when the test runs, not baked in when it is compiled: a test binary built from another
    // checkout sharing the same target directory would otherwise look in that checkout.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo");
    let root = Path::new(&manifest_dir).parent().unwrap();
    let text = std::fs::read_to_string(root.join("config/sluice.yaml")).unwrap();
    // Scripts are referenced relative to the repository root, where `sluice run` is started.
    std::env::set_current_dir(root).unwrap();
    let c = parse(&text, "config/sluice.yaml", env(&[])).unwrap();
    assert_eq!(c.collector.listen, "127.0.0.1:8080");
    assert_eq!(c.destinations[0].transformations, ["scrub_pii"]);
}

#[test]
fn a_destination_may_take_only_sources_that_exist() {
    let ok = GOOD.replace("  - id: archive\n", "  - id: archive\n    sources: [web]\n");
    let c = parse(&ok, "t.yaml", env(&[("KEY", "k1")])).unwrap();
    assert_eq!(c.destinations[0].sources, ["web"]);

    let typo = GOOD.replace("  - id: archive\n", "  - id: archive\n    sources: [wbe]\n");
    let e = parse(&typo, "t.yaml", env(&[("KEY", "k1")])).unwrap_err().to_string();
    assert_eq!(e, "t.yaml:9: destinations: archive takes source \"wbe\", which is not defined under sources:");
}
