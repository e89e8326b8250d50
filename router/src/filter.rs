//! Which events a destination takes: its `sources:` list, the event's `integrations` object,
//! then its `filter:`. Decided from the head the log keeps with each event (see
//! `sluice_eventlog::EventHead`), never by reading the event.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use sluice_eventlog::{EventHead, EventKind};

use crate::config::DestinationConfig;

/// Which events a destination takes (`filter:`). Empty include lists take everything. An event
/// type that is not one of the six is a config error (from the YAML parser).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Event types to take (`track`, `identify`, `page`, `screen`, `group`, `alias`).
    #[serde(default)]
    pub include_types: Vec<EventKind>,
    #[serde(default)]
    pub exclude_types: Vec<EventKind>,
    /// Track event names to take (others, and non-track events, are skipped when set).
    #[serde(default)]
    pub include_events: Vec<String>,
    #[serde(default)]
    pub exclude_events: Vec<String>,
}

impl FilterConfig {
    pub(crate) fn accepts(&self, head: &EventHead<'_>) -> bool {
        let kind_in = |list: &[EventKind]| head.kind.is_some_and(|k| list.contains(&k));
        if !self.include_types.is_empty() && !kind_in(&self.include_types) {
            return false;
        }
        if kind_in(&self.exclude_types) {
            return false;
        }
        let name = head.event.as_deref();
        if !self.include_events.is_empty() && !name.is_some_and(|n| self.include_events.iter().any(|e| e == n)) {
            return false;
        }
        !name.is_some_and(|n| self.exclude_events.iter().any(|e| e == n))
    }
}

impl DestinationConfig {
    /// Whether this destination takes an event from `source`: its `sources:` list, the event's
    /// `integrations` object, then its `filter:`.
    pub(crate) fn takes(&self, head: &EventHead<'_>, source: &str) -> bool {
        if !self.sources.is_empty() && !self.sources.iter().any(|s| s == source) {
            return false;
        }
        integrations_allow(head.integrations.as_deref(), &self.id, self.sink.type_name()) && self.filter.accepts(head)
    }
}

/// Segment's `integrations` semantics. A key equal to the destination's id decides; failing
/// that, a key equal to its sink type (`files`, `webhook`, `s3`, `snowflake`, any case, so the
/// RudderStack-style `"S3": false` works) decides; failing that, `All` (true when absent).
/// `false` turns a destination off; `true`, or an object of settings as Segment's libraries
/// send, turns it on. An `integrations` that is not an object is ignored. Only events that carry
/// the object pay for reading it.
fn integrations_allow(integrations: Option<&str>, id: &str, sink_type: &str) -> bool {
    let Some(raw) = integrations else { return true };
    let Ok(map) = serde_json::from_str::<HashMap<Cow<'_, str>, &RawValue>>(raw) else { return true };
    let on = |v: &RawValue| v.get().trim() != "false";
    if let Some(v) = map.get(id) {
        return on(v);
    }
    if let Some((_, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case(sink_type)) {
        return on(v);
    }
    map.get("All").is_none_or(|v| on(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn takes(yaml: &str, event: &str, source: &str) -> bool {
        let config: DestinationConfig = serde_yaml::from_str(yaml).unwrap();
        config.takes(&EventHead::parse(event.as_bytes()).unwrap(), source)
    }

    const WAREHOUSE: &str = "id: warehouse\nsink: { type: s3, bucket: b }\n";

    #[test]
    fn integrations_follow_segments_all_and_per_destination_keys() {
        let cases = [
            (r#"{"type":"track"}"#, true),
            (r#"{"type":"track","integrations":{}}"#, true),
            (r#"{"type":"track","integrations":{"All":false}}"#, false),
            (r#"{"type":"track","integrations":{"All":false,"warehouse":true}}"#, true),
            (r#"{"type":"track","integrations":{"All":false,"warehouse":{"setting":1}}}"#, true),
            (r#"{"type":"track","integrations":{"warehouse":false}}"#, false),
            (r#"{"type":"track","integrations":{"All":true,"warehouse":false}}"#, false),
            (r#"{"type":"track","integrations":{"S3":false}}"#, false),
            (r#"{"type":"track","integrations":{"All":false,"s3":true}}"#, true),
            (r#"{"type":"track","integrations":{"S3":false,"warehouse":true}}"#, true),
            (r#"{"type":"track","integrations":{"Amplitude":false}}"#, true),
            (r#"{"type":"track","integrations":"nonsense"}"#, true),
        ];
        for (event, want) in cases {
            assert_eq!(takes(WAREHOUSE, event, "web"), want, "{event}");
        }
    }

    #[test]
    fn sources_limit_a_destination_to_its_sources() {
        let yaml = "id: raw_web\nsources: [web]\nsink: { type: files, path: /tmp/x }\n";
        assert!(takes(yaml, r#"{"type":"track"}"#, "web"));
        assert!(!takes(yaml, r#"{"type":"track"}"#, "ios"));
        assert!(!takes(yaml, r#"{"type":"track","integrations":{"raw_web":true}}"#, "ios"), "integrations cannot add a source");
        assert!(takes("id: all\nsink: { type: files, path: /tmp/x }\n", r#"{"type":"track"}"#, "ios"));
    }

    #[test]
    fn types_and_names_filter_and_an_unknown_type_is_a_config_error() {
        let yaml = "id: d\nfilter: { include_types: [track, page], exclude_events: [Noise] }\nsink: { type: files, path: /tmp/x }\n";
        assert!(takes(yaml, r#"{"type":"track","event":"Signal"}"#, "web"));
        assert!(!takes(yaml, r#"{"type":"track","event":"Noise"}"#, "web"));
        assert!(takes(yaml, r#"{"type":"page"}"#, "web"));
        assert!(!takes(yaml, r#"{"type":"identify"}"#, "web"));
        let bad = serde_yaml::from_str::<DestinationConfig>("id: d\nfilter: { include_types: [trak] }\nsink: { type: files, path: /tmp/x }\n");
        assert!(bad.unwrap_err().to_string().contains("trak"));
    }
}
