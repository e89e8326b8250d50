//! Validation and enrichment of incoming events without building a JSON tree.
//!
//! Parsing each event into a `serde_json::Value` costs several times the HTTP work (see
//! BENCHMARKS.md), so the hot path deserializes only the fields it checks, borrowed from the
//! body, and writes the enriched event by splicing new fields into the original bytes. Only rare
//! shapes (a field the collector sets that is present but `null`, or a client-sent `receivedAt`)
//! take the slow path through a parsed map.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::de::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::CollectError;

/// The event types of the Segment / RudderStack spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Kind {
    pub const ALL: [Kind; 6] = [Kind::Track, Kind::Identify, Kind::Page, Kind::Screen, Kind::Group, Kind::Alias];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Identify => "identify",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Group => "group",
            Kind::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A field that tells "absent" (`Field(None)`) from "present, even as null" (`Field(Some("null"))`),
/// which `Option<&RawValue>` cannot: the difference decides whether a field may be appended.
#[derive(Default, Clone, Copy)]
struct Field<'a>(Option<&'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|r| Field(Some(r)))
    }
}

impl<'a> Field<'a> {
    fn is_null_or_absent(&self) -> bool {
        self.0.is_none_or(|r| r.get() == "null")
    }

    fn is_present_null(&self) -> bool {
        self.0.is_some_and(|r| r.get() == "null")
    }

    /// The value as a string, if it is a JSON string.
    fn as_str(&self) -> Option<Cow<'a, str>> {
        let raw = self.0?.get();
        if raw.starts_with('"') {
            serde_json::from_str::<Cow<'a, str>>(raw).ok()
        } else {
            None
        }
    }

    /// An id: a non-blank string or a number (some SDKs send numeric user ids).
    fn is_valid_id(&self) -> bool {
        match self.0.map(RawValue::get) {
            None | Some("null") => false,
            Some(raw) if raw.starts_with('"') => self.as_str().is_some_and(|s| !s.trim().is_empty()),
            Some(raw) => raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()),
        }
    }
}

/// The fields the collector checks or sets; everything else is skipped without being built.
#[derive(serde::Deserialize)]
struct Head<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Field<'a>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Field<'a>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Field<'a>,
    #[serde(borrow, default)]
    event: Field<'a>,
    #[serde(borrow, default, rename = "previousId")]
    previous_id: Field<'a>,
    #[serde(borrow, default, rename = "groupId")]
    group_id: Field<'a>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Field<'a>,
    #[serde(borrow, default, rename = "receivedAt")]
    received_at: Field<'a>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Field<'a>,
    #[serde(borrow, default)]
    timestamp: Field<'a>,
    #[serde(borrow, default, rename = "originalTimestamp")]
    original_timestamp: Field<'a>,
    #[serde(borrow, default)]
    context: Context<'a>,
}

/// What enrichment needs to know of `context`, learned in the same pass as the rest of the head:
/// parsing `context` a second time cost a tenth of the collector's CPU on batches (a chat
/// event's context is about half its bytes).
#[derive(Default, Clone, Copy)]
enum Context<'a> {
    #[default]
    Absent,
    Null,
    NotObject,
    Object {
        ip: Field<'a>,
        /// The first key, borrowed from the event: `ip` is spliced in front of it. `None` for an
        /// empty object or a first key with escapes (those take the slow path).
        first_key: Option<&'a str>,
    },
}

impl<'de: 'a, 'a> Deserialize<'de> for Context<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContextVisitor)
    }
}

struct ContextVisitor;

impl<'de> serde::de::Visitor<'de> for ContextVisitor {
    type Value = Context<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut ip = Field::default();
        let mut first_key = None;
        let mut first = true;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if std::mem::take(&mut first) {
                first_key = key.borrowed;
            }
            if key.is_ip {
                ip = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Context::Object { ip, first_key })
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Context::Null)
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Context::NotObject)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Context::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Context::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Context::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Context::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Context::NotObject)
    }
}

/// A key of `context`: whether it is `ip`, and the key itself when it borrows from the event.
struct Key<'a> {
    is_ip: bool,
    borrowed: Option<&'a str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, k: &'de str) -> Result<Self::Value, E> {
                Ok(Key { is_ip: k == "ip", borrowed: Some(k) })
            }
            fn visit_str<E>(self, k: &str) -> Result<Self::Value, E> {
                Ok(Key { is_ip: k == "ip", borrowed: None })
            }
        }
        d.deserialize_str(V)
    }
}

/// The body of `/v1/batch`: the events stay raw until each is checked.
#[derive(serde::Deserialize)]
pub(crate) struct BatchBody<'a> {
    #[serde(borrow)]
    pub batch: Vec<&'a RawValue>,
    #[serde(borrow, default, rename = "sentAt")]
    sent_at: Field<'a>,
}

impl<'a> BatchBody<'a> {
    pub fn sent_at(&self) -> Option<Cow<'a, str>> {
        self.sent_at.as_str()
    }
}

/// What is the same for every event of one request.
pub struct RequestInfo<'a> {
    /// Type given by the endpoint (`/v1/track`), `None` for `/v1/batch`.
    pub endpoint_kind: Option<Kind>,
    pub received_at: DateTime<Utc>,
    /// `receivedAt` formatted once per request.
    pub received_at_text: &'a str,
    pub ip: Option<&'a str>,
    /// `sentAt` of the batch envelope, used for events that carry none.
    pub batch_sent_at: Option<Cow<'a, str>>,
}

fn parse_time(field: &str, value: &str) -> Result<DateTime<FixedOffset>, CollectError> {
    DateTime::parse_from_rfc3339(value)
        .map_err(|_| CollectError::InvalidEvent(format!("{field} {value:?} is not an RFC 3339 date-time")))
}

fn time_field<'a>(name: &str, f: &Field<'a>) -> Result<Option<Cow<'a, str>>, CollectError> {
    if f.is_null_or_absent() {
        return Ok(None);
    }
    match f.as_str() {
        Some(s) => {
            parse_time(name, &s)?;
            Ok(Some(s))
        }
        None => Err(CollectError::InvalidEvent(format!("{name} must be a string date-time"))),
    }
}

/// Checks one event and appends its enriched JSON to `out`. Returns its type.
pub fn enrich(raw: &str, info: &RequestInfo<'_>, out: &mut Vec<u8>) -> Result<Kind, CollectError> {
    let raw = raw.trim();
    if !raw.starts_with('{') {
        return Err(CollectError::InvalidEvent("an event must be a JSON object".into()));
    }
    let head: Head<'_> = serde_json::from_str(raw).map_err(|e| CollectError::MalformedJson(e.to_string()))?;

    let kind = match (info.endpoint_kind, head.kind.as_str()) {
        (Some(k), None) if head.kind.is_null_or_absent() => k,
        (Some(k), Some(t)) if t == k.as_str() => k,
        (Some(k), _) => {
            return Err(CollectError::InvalidEvent(format!("type must be {:?} on /v1/{}", k.as_str(), k.as_str())))
        }
        (None, Some(t)) => Kind::parse(&t).ok_or_else(|| {
            CollectError::InvalidEvent(format!(
                "unknown type {t:?}: expected track, identify, page, screen, group or alias"
            ))
        })?,
        (None, None) => return Err(CollectError::InvalidEvent("every event in a batch needs a \"type\"".into())),
    };
    if !head.user_id.is_valid_id() && !head.anonymous_id.is_valid_id() {
        return Err(CollectError::InvalidEvent(format!("{} event needs a non-blank userId or anonymousId", kind.as_str())));
    }
    match kind {
        Kind::Track if head.event.as_str().is_none_or(|e| e.trim().is_empty()) => {
            return Err(CollectError::InvalidEvent("track event needs a non-empty \"event\" name".into()))
        }
        Kind::Alias if !head.previous_id.is_valid_id() => {
            return Err(CollectError::InvalidEvent("alias event needs a non-blank \"previousId\"".into()))
        }
        Kind::Group if !head.group_id.is_valid_id() => {
            return Err(CollectError::InvalidEvent("group event needs a non-blank \"groupId\"".into()))
        }
        _ => {}
    }
    if !head.message_id.is_null_or_absent() && !head.message_id.is_valid_id() {
        return Err(CollectError::InvalidEvent("messageId must be a non-blank string".into()));
    }
    let timestamp = time_field("timestamp", &head.timestamp)?;
    let original = time_field("originalTimestamp", &head.original_timestamp)?;
    let sent_at = time_field("sentAt", &head.sent_at)?;
    let batch_sent_at = if sent_at.is_none() { info.batch_sent_at.clone() } else { None };

    // Event time corrected for the client's clock: receivedAt - (sentAt - originalTimestamp).
    let computed_timestamp = if timestamp.is_some() {
        None
    } else {
        let sent = sent_at.as_deref().or(batch_sent_at.as_deref());
        Some(match (original.as_deref(), sent) {
            (Some(o), Some(s)) => {
                let skew = parse_time("sentAt", s)? - parse_time("originalTimestamp", o)?;
                (info.received_at - skew).to_rfc3339_opts(SecondsFormat::Millis, true)
            }
            (Some(o), None) => o.to_string(),
            _ => info.received_at_text.to_string(),
        })
    };

    let context_ip = match (head.context, info.ip) {
        (_, None) => ContextIp::Keep,
        (Context::Absent, Some(ip)) => ContextIp::AddContext(ip),
        (Context::Null, Some(_)) => ContextIp::Slow,
        (Context::NotObject, Some(_)) => return Err(CollectError::InvalidEvent("context must be a JSON object".into())),
        (Context::Object { ip: found, .. }, Some(_)) if found.is_present_null() => ContextIp::Slow,
        (Context::Object { ip: found, .. }, Some(_)) if found.0.is_some() => ContextIp::Keep,
        (Context::Object { first_key, .. }, Some(ip)) => match first_key.and_then(|k| quote_position(raw, k)) {
            Some(at) => ContextIp::InsertAt(at, ip),
            None => ContextIp::Slow,
        },
    };

    let mut add: Vec<(&str, String)> = Vec::with_capacity(5);
    if info.endpoint_kind.is_some() && head.kind.is_null_or_absent() {
        add.push(("type", json_string(kind.as_str())));
    }
    if head.message_id.is_null_or_absent() {
        add.push(("messageId", json_string(&uuid::Uuid::new_v4().to_string())));
    }
    add.push(("receivedAt", json_string(info.received_at_text)));
    if let Some(s) = &batch_sent_at {
        add.push(("sentAt", json_string(s)));
    }
    if let Some(t) = &computed_timestamp {
        add.push(("timestamp", json_string(t)));
    }

    let slow = matches!(context_ip, ContextIp::Slow)
        || head.received_at.0.is_some()
        || head.kind.is_present_null() && info.endpoint_kind.is_some()
        || head.message_id.is_present_null()
        || head.timestamp.is_present_null()
        || head.sent_at.is_present_null() && batch_sent_at.is_some();
    if slow {
        enrich_slow(raw, &add, info.ip, out)?;
    } else {
        splice(raw, &add, context_ip, out);
    }
    Ok(kind)
}

enum ContextIp<'a> {
    Keep,
    AddContext(&'a str),
    /// Insert `"ip":...,` at this byte position of the event: the opening quote of the first key
    /// of `context`.
    InsertAt(usize, &'a str),
    Slow,
}

/// Where `key` (a slice of `raw`, as serde_json borrows it) starts in `raw`, counting its opening
/// quote. `None` if `key` does not point into `raw` after a quote.
fn quote_position(raw: &str, key: &str) -> Option<usize> {
    let at = (key.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?.checked_sub(1)?;
    (at < raw.len() && raw.as_bytes()[at] == b'"').then_some(at)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

/// Fast path: copies the event and splices new fields in, without re-serializing anything.
fn splice(raw: &str, add: &[(&str, String)], context_ip: ContextIp<'_>, out: &mut Vec<u8>) {
    let body_end = raw.rfind('}').expect("checked to be an object");
    let inner_empty = raw[1..body_end].trim().is_empty();
    match context_ip {
        ContextIp::InsertAt(at, ip) => {
            out.extend_from_slice(&raw.as_bytes()[..at]);
            out.extend_from_slice(b"\"ip\":");
            out.extend_from_slice(json_string(ip).as_bytes());
            out.push(b',');
            out.extend_from_slice(&raw.as_bytes()[at..body_end]);
        }
        _ => out.extend_from_slice(&raw.as_bytes()[..body_end]),
    }
    let mut first = inner_empty;
    let mut push = |out: &mut Vec<u8>, key: &str, value: &str| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value.as_bytes());
    };
    for (key, value) in add {
        push(out, key, value);
    }
    if let ContextIp::AddContext(ip) = context_ip {
        push(out, "context", &format!("{{\"ip\":{}}}", json_string(ip)));
    }
    out.push(b'}');
}

/// Slow path for rare shapes: parse, set, serialize.
fn enrich_slow(raw: &str, add: &[(&str, String)], ip: Option<&str>, out: &mut Vec<u8>) -> Result<(), CollectError> {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|e| CollectError::MalformedJson(e.to_string()))?;
    for (key, value) in add {
        map.insert((*key).to_string(), serde_json::from_str(value).expect("built by json_string"));
    }
    if let Some(ip) = ip {
        let ctx = map.entry("context").or_insert_with(|| serde_json::Value::Object(Default::default()));
        if ctx.is_null() {
            *ctx = serde_json::Value::Object(Default::default());
        }
        let Some(ctx) = ctx.as_object_mut() else {
            return Err(CollectError::InvalidEvent("context must be a JSON object".into()));
        };
        if ctx.get("ip").is_none_or(serde_json::Value::is_null) {
            ctx.insert("ip".into(), ip.into());
        }
    }
    serde_json::to_writer(out, &map).map_err(|e| CollectError::MalformedJson(e.to_string()))
}

#[cfg(test)]
mod tests;
