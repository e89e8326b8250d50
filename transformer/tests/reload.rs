//! Reload on SIGHUP (`reload_all`) and on file change (`watch`): a new version that compiles
//! replaces the old one; one that does not is refused and the old one keeps running.

mod common;

use std::time::{Duration, Instant};

use common::{apply, Scripts};
use serde_json::json;
use sluice_transformer::{Registry, TransformError};

fn version_script(n: u32) -> String {
    format!("fn transform(event, meta) {{\n  event.version = {n};\n  event\n}}\n")
}

const BROKEN: &str = "fn transform(event, meta) {\n  event.version = ;\n  event\n}\n";

fn version(chain: &sluice_transformer::Chain) -> serde_json::Value {
    apply(chain, &json!({})).unwrap()[0]["version"].clone()
}

#[test]
fn reload_all_swaps_in_a_version_that_compiles_and_refuses_one_that_does_not() {
    let scripts = Scripts::new();
    let config = scripts.config("v", &version_script(1));
    let registry = Registry::load(std::slice::from_ref(&config)).unwrap();
    let chain = registry.chain(&["v".into()]).unwrap();
    assert_eq!(version(&chain), 1);

    std::fs::write(&config.script, version_script(2)).unwrap();
    assert!(registry.reload_all().is_empty());
    assert_eq!(version(&chain), 2, "an existing chain sees the new version");

    std::fs::write(&config.script, BROKEN).unwrap();
    let refused = registry.reload_all();
    assert_eq!(refused.len(), 1);
    assert!(matches!(&refused[0], TransformError::Compile { line: Some(2), .. }), "{}", refused[0]);
    assert_eq!(version(&chain), 2, "the previous version keeps running");

    std::fs::remove_file(&config.script).unwrap();
    assert!(matches!(registry.reload_all()[0], TransformError::Read { .. }));
    assert_eq!(version(&chain), 2);
}

fn wait_for(chain: &sluice_transformer::Chain, want: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if version(chain) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn wait_rounds(watch: &sluice_transformer::WatchHandle, n: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while watch.rounds() < n {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

#[test]
fn the_watcher_reloads_changed_files_and_keeps_the_old_version_on_errors() {
    let scripts = Scripts::new();
    let config = scripts.config("w", &version_script(1));
    let registry = Registry::load(std::slice::from_ref(&config)).unwrap();
    let chain = registry.chain(&["w".into()]).unwrap();
    let watch = registry.watch_every(Duration::from_millis(25));

    std::fs::write(&config.script, version_script(2)).unwrap();
    assert!(wait_for(&chain, 2), "the watcher picked up version 2");

    std::fs::write(&config.script, BROKEN).unwrap();
    // Two whole rounds after the write: the watcher has looked at the broken file.
    let seen = watch.rounds() + 2;
    assert!(wait_rounds(&watch, seen), "the watcher kept polling");
    assert_eq!(version(&chain), 2, "a broken version is refused");

    // Replaced by rename, as editors do.
    let tmp = scripts.dir.path().join("w.rhai.tmp");
    std::fs::write(&tmp, version_script(3)).unwrap();
    std::fs::rename(&tmp, &config.script).unwrap();
    assert!(wait_for(&chain, 3), "the watcher picked up version 3 after the refused one");

    drop(watch);
    std::fs::write(&config.script, version_script(4)).unwrap();
    // A second watcher with the same interval, still running, is the clock: once it has done
    // two rounds since the write, the dropped one would have acted too.
    let other = Scripts::new();
    let other_config = other.config("o", &version_script(1));
    let other_registry = Registry::load(std::slice::from_ref(&other_config)).unwrap();
    let other_watch = other_registry.watch_every(Duration::from_millis(25));
    assert!(wait_rounds(&other_watch, 2), "the other watcher polls");
    assert_eq!(version(&chain), 3, "a dropped watch handle stops watching");
    assert!(registry.reload("w").unwrap());
    assert_eq!(version(&chain), 4);
}
