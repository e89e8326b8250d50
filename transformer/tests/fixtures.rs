//! The fixtures of every shipped script in `transforms/` must pass: the same check that
//! `sluice transform test SCRIPT --fixtures DIR` runs.

mod common;

use sluice_transformer::testing;

#[test]
fn every_shipped_script_passes_its_fixtures() {
    let pairs = testing::shipped_scripts(&common::transforms_dir()).unwrap();
    assert!(pairs.len() >= 4, "expected scrub_pii and at least three more scripts, found {pairs:?}");
    let mut report = Vec::new();
    let mut all_ok = true;
    for (script, fixtures) in &pairs {
        assert!(fixtures.is_dir(), "{} has no fixture directory {}", script.display(), fixtures.display());
        let ok = testing::check_fixtures(script, Default::default(), fixtures, &mut report)
            .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        all_ok &= ok;
    }
    let report = String::from_utf8(report).unwrap();
    assert!(all_ok, "fixture mismatches:\n{report}");
    assert!(!report.contains("FAIL"), "{report}");
    assert!(pairs.iter().any(|(s, _)| s.ends_with("scrub_pii.rhai")));
}

#[test]
fn a_wrong_expectation_is_reported_with_the_differing_path() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("t.rhai");
    std::fs::write(&script, "fn transform(e, m) { e.context.ip = anonymize_ip(e.context.ip); e }").unwrap();
    std::fs::write(dir.path().join("a.input.json"), r#"{"context":{"ip":"1.2.3.4"}}"#).unwrap();
    std::fs::write(dir.path().join("a.expected.json"), r#"{"context":{"ip":"1.2.3.4"}}"#).unwrap();
    std::fs::write(dir.path().join("b.input.json"), r#"{"context":{"ip":"1.2.3.4"}}"#).unwrap();
    std::fs::write(dir.path().join("b.expected.json"), r#"{"context":{"ip":"1.2.3.0"}}"#).unwrap();
    std::fs::write(dir.path().join("c.input.json"), r#"{"context":{"ip":"1.2.3.4"}}"#).unwrap();
    std::fs::write(dir.path().join("c.expected.json"), "[]").unwrap();
    let mut out = Vec::new();
    let ok = testing::check_fixtures(&script, Default::default(), dir.path(), &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL a"), "{out}");
    assert!(out.contains(r#"$.context.ip: expected "1.2.3.4", got "1.2.3.0""#), "{out}");
    assert!(out.contains("ok   b"), "{out}");
    assert!(out.contains("FAIL c") && out.contains("expected 0 event(s), got 1"), "{out}");
    assert!(out.contains("3 fixtures") && out.contains("1 passed, 2 failed"), "{out}");
}

#[test]
fn an_expected_error_fixture_matches_the_error_text() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("t.rhai");
    std::fs::write(&script, "fn transform(e, m) {\n  if e.bad == true { throw \"bad event\"; }\n  e\n}").unwrap();
    std::fs::write(dir.path().join("x.input.json"), r#"{"bad":true}"#).unwrap();
    std::fs::write(dir.path().join("x.expected-error.txt"), "line 2: script error: bad event\n").unwrap();
    let mut out = Vec::new();
    assert!(testing::check_fixtures(&script, Default::default(), dir.path(), &mut out).unwrap());
}

#[test]
fn an_empty_fixture_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("t.rhai");
    std::fs::write(&script, "fn transform(e, m) { e }").unwrap();
    let err = testing::check_fixtures(&script, Default::default(), dir.path(), &mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("no NAME.input.json fixtures"), "{err}");
}
