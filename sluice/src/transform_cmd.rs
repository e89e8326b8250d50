//! `sluice transform test SCRIPT --event FILE | --fixtures DIR`: the command around the
//! transformer's script-testing harness (`sluice_transformer::testing`), which does the work.

use std::io::Write;
use std::path::Path;

use anyhow::anyhow;
use sluice_transformer::testing;

/// What the script is run over.
pub enum Input<'a> {
    /// A JSON object, a JSON array of objects, or NDJSON.
    Events(&'a Path),
    /// A directory of `NAME.input.json` / `NAME.expected.json` pairs.
    Fixtures(&'a Path),
}

/// Runs the command with `params` (a JSON object, as `--params` gives it) and writes the report
/// to `out`. `Ok(false)` when the script failed on an event or a fixture did not match: the
/// command then exits 1, so CI notices.
pub fn test(script: &Path, input: Input<'_>, params: &str, out: &mut dyn Write) -> anyhow::Result<bool> {
    let params: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(params).map_err(|e| anyhow!("--params must be a JSON object: {e}"))?;
    match input {
        Input::Fixtures(dir) => Ok(testing::check_fixtures(script, params, dir, out)?),
        Input::Events(file) => {
            let failed = testing::run_events(script, params, file, out)?;
            if failed > 0 {
                eprintln!("error: the script failed on {failed} event(s)");
            }
            Ok(failed == 0)
        }
    }
}
