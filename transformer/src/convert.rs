//! Stored event bytes <-> Rhai values.
//!
//! Both directions go straight between JSON text and `Dynamic` (rhai's serde support), with no
//! `serde_json::Value` tree in between: performance-notes.md measured the intermediate tree at
//! about a fifth of the whole transform cost.
//!
//! Rhai maps are ordered by key, so an event comes out with its keys sorted; JSON consumers do
//! not depend on key order.

use rhai::Dynamic;

use crate::TransformError;

/// Parses one stored event, which must be a JSON object.
pub fn event_from_json(bytes: &[u8]) -> Result<Dynamic, TransformError> {
    let value: Dynamic =
        serde_json::from_slice(bytes).map_err(|e| TransformError::BadEvent(e.to_string()))?;
    if value.is_map() {
        Ok(value)
    } else {
        Err(TransformError::BadEvent(format!(
            "found a JSON {}",
            json_kind(&value)
        )))
    }
}

/// Serialises a script's output event. Values JSON cannot hold (function pointers, timestamps)
/// become strings; non-finite floats become `null`.
pub fn event_to_json(value: &Dynamic) -> Vec<u8> {
    // Serialising a Dynamic into a Vec cannot fail: every key is a string and every value has
    // a JSON form.
    serde_json::to_vec(value).expect("a Rhai value always serialises to JSON")
}

pub fn json_kind(value: &Dynamic) -> &'static str {
    if value.is_unit() {
        "null"
    } else if value.is_array() {
        "array"
    } else if value.is_string() {
        "string"
    } else if value.is_bool() {
        "boolean"
    } else if value.is_int() || value.is_float() {
        "number"
    } else if value.is_map() {
        "object"
    } else {
        value.type_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_an_event() {
        let input = br#"{"type":"track","n":1,"f":1.5,"ok":true,"none":null,"list":[1,"a"],
            "context":{"ip":"1.2.3.4","big":18446744073709551615}}"#;
        let value = event_from_json(input).unwrap();
        let out: serde_json::Value = serde_json::from_slice(&event_to_json(&value)).unwrap();
        let expected = serde_json::json!({"type":"track","n":1,"f":1.5,"ok":true,"none":null,
            "list":[1,"a"],"context":{"ip":"1.2.3.4","big":18446744073709551615.0}});
        assert_eq!(out, expected);
    }

    #[test]
    fn rejects_non_objects() {
        let err = event_from_json(b"[1,2]").unwrap_err();
        assert_eq!(err.to_string(), "event is not a JSON object: found a JSON array");
        assert!(event_from_json(b"{not json").is_err());
    }
}
