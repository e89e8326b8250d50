//! Running a script outside the pipeline: over sample events, or against fixtures of expected
//! outcomes, with a report written to any `Write`. `sluice transform test` (the command lives in
//! the binary, `sluice/src/transform_cmd.rs`) and the shipped scripts' fixture test call it.
//!
//! Fixture convention (documented in docs/transforms.md): a directory holds pairs
//! `NAME.input.json` (one event) and `NAME.expected.json` (the expected outcome: an object for
//! one event, an array for a split — `[]` or `null` for a drop), or instead of the latter
//! `NAME.expected-error.txt` holding text the error message must contain. An optional
//! `params.json` in the directory is merged over the given params.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Chain, Limits, Meta, Registry, TransformError, TransformationConfig};

type Params = Map<String, Value>;

fn input_error(path: &Path, message: impl std::fmt::Display) -> TransformError {
    TransformError::Input {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn write_err(e: std::io::Error) -> TransformError {
    input_error(Path::new("<output>"), e)
}

fn load_chain(script: &Path, params: Params) -> Result<Chain, TransformError> {
    let id = script
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "script".into());
    let config = TransformationConfig {
        id: id.clone(),
        script: script.to_path_buf(),
        params,
        limits: Limits::default(),
    };
    Registry::load(&[config])?.chain(&[id])
}

/// Splits a file into events: one JSON object, a JSON array of objects, or NDJSON.
pub fn parse_events(path: &Path) -> Result<Vec<Value>, TransformError> {
    let bytes = std::fs::read(path).map_err(|e| input_error(path, e))?;
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_slice(&bytes).into_iter::<Value>() {
        values.push(value.map_err(|e| input_error(path, format!("invalid JSON: {e}")))?);
    }
    if let [Value::Array(items)] = values.as_mut_slice() {
        return Ok(std::mem::take(items));
    }
    Ok(values)
}

fn message_id(event: &Value) -> &str {
    event.get("messageId").and_then(Value::as_str).unwrap_or("")
}

fn run(chain: &Chain, event: &Value) -> Result<Vec<Value>, TransformError> {
    let bytes = serde_json::to_vec(event).expect("a JSON value serialises");
    let meta = Meta::new("cli", "cli", message_id(event));
    let outputs = chain.apply(&bytes, &meta)?;
    Ok(outputs
        .iter()
        .map(|o| serde_json::from_slice(o).expect("the chain emits JSON"))
        .collect())
}

/// Runs SCRIPT over one event or a file of events and prints each outcome (the output events,
/// "dropped", or the error) to `out`. Errors of single events are printed, not returned, and
/// counted: the result is how many events the script failed on (`sluice transform test` exits 1
/// when there are any, so CI notices). The `Err` is for a script that does not compile or an unreadable file.
pub fn run_events(
    script: &Path,
    params: Params,
    events_file: &Path,
    out: &mut dyn Write,
) -> Result<usize, TransformError> {
    let chain = load_chain(script, params)?;
    let events = parse_events(events_file)?;
    let mut failed = 0;
    for (i, event) in events.iter().enumerate() {
        let n = i + 1;
        match run(&chain, event) {
            Ok(outputs) => {
                let what = match outputs.as_slice() {
                    [] => "dropped".to_string(),
                    [one] if one == event => "unchanged".to_string(),
                    [_] => "changed".to_string(),
                    many => format!("split into {}", many.len()),
                };
                writeln!(out, "# event {n} (messageId {:?}): {what}", message_id(event))
                    .map_err(write_err)?;
                for output in &outputs {
                    writeln!(out, "{}", pretty(output)).map_err(write_err)?;
                }
            }
            Err(e) => {
                failed += 1;
                writeln!(out, "# event {n} (messageId {:?}): error: {e}", message_id(event)).map_err(write_err)?
            }
        }
    }
    Ok(failed)
}

enum Expected {
    Events(Vec<Value>),
    ErrorContaining(String),
}

fn read_json(path: &Path) -> Result<Value, TransformError> {
    let bytes = std::fs::read(path).map_err(|e| input_error(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| input_error(path, format!("invalid JSON: {e}")))
}

fn expected_for(dir: &Path, name: &str) -> Result<Expected, TransformError> {
    let error_file = dir.join(format!("{name}.expected-error.txt"));
    if error_file.exists() {
        let text = std::fs::read_to_string(&error_file).map_err(|e| input_error(&error_file, e))?;
        return Ok(Expected::ErrorContaining(text.trim().to_string()));
    }
    let path = dir.join(format!("{name}.expected.json"));
    Ok(Expected::Events(match read_json(&path)? {
        Value::Null => Vec::new(),
        Value::Array(items) => items,
        one => vec![one],
    }))
}

/// The fixture names in `dir` (`NAME` of every `NAME.input.json`), sorted.
pub fn fixture_names(dir: &Path) -> Result<Vec<String>, TransformError> {
    let entries = std::fs::read_dir(dir).map_err(|e| input_error(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| input_error(dir, e))?;
        let file = entry.file_name().to_string_lossy().into_owned();
        if let Some(name) = file.strip_suffix(".input.json") {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// Checks every fixture in `dir` against SCRIPT. Prints `ok NAME` or `FAIL NAME` with the
/// differences, then a summary; `Ok(true)` when all match. A directory without fixtures is an
/// error (it is more likely a wrong path than a script with nothing to check).
pub fn check_fixtures(
    script: &Path,
    params: Params,
    dir: &Path,
    out: &mut dyn Write,
) -> Result<bool, TransformError> {
    let mut params = params;
    let params_file = dir.join("params.json");
    if params_file.exists() {
        match read_json(&params_file)? {
            Value::Object(extra) => params.extend(extra),
            _ => return Err(input_error(&params_file, "params.json must hold a JSON object")),
        }
    }
    let chain = load_chain(script, params)?;
    let names = fixture_names(dir)?;
    if names.is_empty() {
        return Err(input_error(dir, "no NAME.input.json fixtures in this directory"));
    }
    let mut failed = 0;
    for name in &names {
        let input = read_json(&dir.join(format!("{name}.input.json")))?;
        let expected = expected_for(dir, name)?;
        let problems = compare(&expected, run(&chain, &input));
        if problems.is_empty() {
            writeln!(out, "ok   {name}").map_err(write_err)?;
        } else {
            failed += 1;
            writeln!(out, "FAIL {name}").map_err(write_err)?;
            for p in problems {
                writeln!(out, "     {p}").map_err(write_err)?;
            }
        }
    }
    writeln!(
        out,
        "{} fixtures in {}: {} passed, {failed} failed",
        names.len(),
        dir.display(),
        names.len() - failed
    )
    .map_err(write_err)?;
    Ok(failed == 0)
}

fn compare(expected: &Expected, actual: Result<Vec<Value>, TransformError>) -> Vec<String> {
    match (expected, actual) {
        (Expected::ErrorContaining(text), Err(e)) if e.to_string().contains(text.as_str()) => vec![],
        (Expected::ErrorContaining(text), Err(e)) => {
            vec![format!("expected an error containing {text:?}, got: {e}")]
        }
        (Expected::ErrorContaining(text), Ok(got)) => vec![format!(
            "expected an error containing {text:?}, got {} event(s):\n{}",
            got.len(),
            pretty(&Value::Array(got))
        )],
        (Expected::Events(_), Err(e)) => vec![format!("error: {e}")],
        (Expected::Events(want), Ok(got)) if want.len() != got.len() => vec![format!(
            "expected {} event(s), got {}:\n{}",
            want.len(),
            got.len(),
            pretty(&Value::Array(got))
        )],
        (Expected::Events(want), Ok(got)) => {
            let mut diffs = Vec::new();
            for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                let root = if want.len() == 1 { "$".to_string() } else { format!("[{i}]") };
                diff(&root, w, g, &mut diffs);
            }
            diffs
        }
    }
}

/// One line per differing leaf, e.g. `$.context.ip: expected "1.2.3.0", got "1.2.3.4"`.
fn diff(path: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            let mut keys: Vec<&String> = w.keys().chain(g.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = format!("{path}.{k}");
                match (w.get(k), g.get(k)) {
                    (Some(wv), Some(gv)) => diff(&p, wv, gv, out),
                    (Some(wv), None) => out.push(format!("{p}: expected {wv}, missing")),
                    (None, Some(gv)) => out.push(format!("{p}: unexpected {gv}")),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                diff(&format!("{path}[{i}]"), wv, gv, out);
            }
        }
        _ if numbers_equal(want, got) => {}
        _ if want != got => out.push(format!("{path}: expected {want}, got {got}")),
        _ => {}
    }
}

/// `1` and `1.0` are the same JSON number to every consumer; Rhai may turn one into the other.
fn numbers_equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("a JSON value serialises")
}

/// Every `transforms/NAME.rhai` paired with its fixture directory `transforms/fixtures/NAME`
/// (the layout of the shipped scripts), for tests and CI.
pub fn shipped_scripts(transforms_dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, TransformError> {
    let entries = std::fs::read_dir(transforms_dir).map_err(|e| input_error(transforms_dir, e))?;
    let mut pairs = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| input_error(transforms_dir, e))?.path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let stem = path.file_stem().expect("a .rhai file has a stem").to_owned();
            pairs.push((path, transforms_dir.join("fixtures").join(stem)));
        }
    }
    pairs.sort();
    Ok(pairs)
}
