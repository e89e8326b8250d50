//! Checks that need no tree: nesting depth by a byte scan, JSON types by a value's first byte,
//! and the slow-path edits (batch context merge, timestamp repair notes) on a parsed map.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sluice_eventlog::MAX_EVENT_DEPTH;

use crate::CollectError;

/// Deepest nesting of objects and arrays in `json` (a valid JSON text), the outermost value
/// counting as 1. Brackets inside strings do not count: a string is skipped from its opening
/// quote to the first quote not escaped by a backslash.
pub(crate) fn depth(json: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                i += 1;
                while i < json.len() {
                    match json[i] {
                        b'\\' => i += 1,
                        b'"' => break,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    max
}

pub(crate) fn check_depth(json: &[u8]) -> Result<(), CollectError> {
    let found = depth(json);
    if found > MAX_EVENT_DEPTH {
        return Err(CollectError::InvalidEvent(format!(
            "the event nests objects and arrays {found} levels deep; the limit is {MAX_EVENT_DEPTH}"
        )));
    }
    Ok(())
}

/// JSON type of a raw value, from its first byte (serde_json has already checked the grammar).
pub(crate) fn kind_of(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// `field` must be an object when present; `null` counts as absent.
pub(crate) fn object_or_absent(field: &str, raw: Option<&RawValue>) -> Result<(), CollectError> {
    match raw.map(kind_of) {
        None | Some("an object") | Some("null") => Ok(()),
        Some(other) => Err(CollectError::InvalidEvent(format!("{field} must be a JSON object, not {other}"))),
    }
}

pub(crate) fn string_or_absent(field: &str, raw: Option<&RawValue>) -> Result<(), CollectError> {
    match raw.map(kind_of) {
        None | Some("a string") | Some("null") => Ok(()),
        Some(other) => Err(CollectError::InvalidEvent(format!("{field} must be a string, not {other}"))),
    }
}

/// Ids are strings or numbers (some SDKs send numeric user ids).
pub(crate) fn id_or_absent(field: &str, raw: Option<&RawValue>) -> Result<(), CollectError> {
    match raw.map(kind_of) {
        None | Some("a string") | Some("a number") | Some("null") => Ok(()),
        Some(other) => Err(CollectError::InvalidEvent(format!("{field} must be a string or a number, not {other}"))),
    }
}

/// Adds what the batch envelope holds under `key` to the event's own, the event's values winning
/// at every depth (objects merge key by key; anything else the event has replaces the batch's).
pub(crate) fn merge_under(event: &mut Map<String, Value>, key: &str, batch: &Value) {
    match event.get_mut(key) {
        None | Some(Value::Null) => {
            event.insert(key.to_string(), batch.clone());
        }
        Some(Value::Object(own)) => {
            if let Value::Object(batch) = batch {
                merge_missing(own, batch);
            }
        }
        Some(_) => {}
    }
}

fn merge_missing(own: &mut Map<String, Value>, batch: &Map<String, Value>) {
    for (k, v) in batch {
        match own.get_mut(k) {
            None => {
                own.insert(k.clone(), v.clone());
            }
            Some(Value::Object(inner)) => {
                if let Value::Object(b) = v {
                    merge_missing(inner, b);
                }
            }
            Some(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings_only() {
        assert_eq!(depth(br#"{}"#), 1);
        assert_eq!(depth(br#"{"a":{"b":[1,{"c":2}]},"d":[]}"#), 4);
        assert_eq!(depth(br#"{"a":"{[{[{[","b":"\"{{","c":"\\","d":{}}"#), 2);
        assert_eq!(depth(br#"{"k\"[":["\\\"[["]}"#), 2);
    }

    #[test]
    fn batch_values_fill_in_what_the_event_lacks() {
        let mut event: Map<String, Value> =
            serde_json::from_str(r#"{"context":{"library":{"version":"2"},"locale":"de"}}"#).unwrap();
        let batch: Value = serde_json::from_str(r#"{"library":{"name":"py","version":"1"},"locale":"en","app":{"v":1}}"#).unwrap();
        merge_under(&mut event, "context", &batch);
        merge_under(&mut event, "integrations", &serde_json::json!({"All": false}));
        assert_eq!(
            Value::Object(event),
            serde_json::json!({"context": {"library": {"name": "py", "version": "2"}, "locale": "de", "app": {"v": 1}},
                               "integrations": {"All": false}})
        );
    }
}
