//! Validation and enrichment of incoming events without building a JSON tree.
//!
//! Parsing each event into a `serde_json::Value` costs several times the HTTP work (see
//! BENCHMARKS.md), so the hot path deserializes only the fields it checks, borrowed from the
//! body, and writes the enriched event by splicing new fields into the original bytes. Only rare
//! shapes (a field the collector sets that is present but `null`, or a client-sent `receivedAt`)
//! take the slow path through a parsed map.
//!
//! Every event is also checked against what later stages need, so that a 200 never acknowledges
//! an event no destination can take: nesting at most [`MAX_EVENT_DEPTH`] deep (a byte scan, see
//! `check.rs`), and the JSON types the Segment spec gives its fields. A `timestamp`,
//! `originalTimestamp` or `sentAt` that is not RFC 3339 does not reject the event (as
//! rudder-server does, the event time falls back to `receivedAt`): the field is replaced by
//! `receivedAt` and what the client sent is kept under `context.sluice.invalid_timestamps`.

use std::borrow::Cow;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use serde::de::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::CollectError;

mod check;

pub use sluice_eventlog::{EventHead, EventKind, MAX_EVENT_DEPTH};

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
        sluice_eventlog::string_text(self.0?.get())
    }

    /// The id's text, if it is one (the log's rule, [`sluice_eventlog::id_text`]).
    fn id(&self) -> Option<Cow<'a, str>> {
        self.0.and_then(sluice_eventlog::id_text)
    }

    fn is_valid_id(&self) -> bool {
        self.id().is_some()
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
    #[serde(borrow, default)]
    properties: Field<'a>,
    #[serde(borrow, default)]
    traits: Field<'a>,
    #[serde(borrow, default)]
    integrations: Field<'a>,
    #[serde(borrow, default)]
    name: Field<'a>,
    /// Accepted as the credential (Segment's HTTP API allows it) and never stored.
    #[serde(borrow, default, rename = "writeKey")]
    write_key: Field<'a>,
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
        traits: Field<'a>,
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
        let mut traits = Field::default();
        let mut first_key = None;
        let mut first = true;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            if std::mem::take(&mut first) {
                first_key = key.borrowed;
            }
            if key.is_ip {
                ip = map.next_value()?;
            } else if key.is_traits {
                traits = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(Context::Object { ip, traits, first_key })
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
    is_traits: bool,
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
                Ok(Key { is_ip: k == "ip", is_traits: k == "traits", borrowed: Some(k) })
            }
            fn visit_str<E>(self, k: &str) -> Result<Self::Value, E> {
                Ok(Key { is_ip: k == "ip", is_traits: k == "traits", borrowed: None })
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
    #[serde(borrow, default)]
    context: Field<'a>,
    #[serde(borrow, default)]
    integrations: Field<'a>,
}

impl<'a> BatchBody<'a> {
    /// Fills in what the envelope gives every event: `sentAt`, `context` and `integrations`.
    pub fn apply_to(&self, info: &mut RequestInfo<'a>) -> Result<(), CollectError> {
        info.batch_sent_at = self.sent_at.0.filter(|r| r.get() != "null");
        for (name, field, slot) in [
            ("context", &self.context, &mut info.batch_context),
            ("integrations", &self.integrations, &mut info.batch_integrations),
        ] {
            check::object_or_absent(&format!("the batch's {name}"), field.0)?;
            let Some(raw) = field.0.filter(|r| r.get() != "null") else { continue };
            // Merged into an event, the envelope's value sits one level below the event's top.
            if check::depth(raw.get().as_bytes()) + 1 > MAX_EVENT_DEPTH {
                return Err(CollectError::InvalidEvent(format!(
                    "the batch's {name} nests deeper than the event limit of {MAX_EVENT_DEPTH} allows"
                )));
            }
            *slot = Some(serde_json::from_str(raw.get()).map_err(|e| CollectError::MalformedJson(e.to_string()))?);
        }
        Ok(())
    }
}

/// Fields that hold a date-time, in the order of [`Enriched::repaired`].
pub const TIME_FIELDS: [&str; 3] = ["timestamp", "originalTimestamp", "sentAt"];

/// What [`enrich`] learned of an accepted event.
pub struct Enriched<'a> {
    pub kind: EventKind,
    /// Which of [`TIME_FIELDS`] were not RFC 3339 and were replaced by `receivedAt`.
    pub repaired: [bool; 3],
    /// The head the log keeps with the event, taken from the pass that checked it (the router
    /// never parses the event to route it).
    pub head: EventHead<'a>,
    /// The event's text as it came, which the head borrows from and the stored event begins
    /// with (for [`sluice_eventlog::AppendBatch::push`]).
    pub origin: &'a str,
}

/// What is the same for every event of one request.
pub struct RequestInfo<'a> {
    /// Type given by the endpoint (`/v1/track`), `None` for `/v1/batch`.
    pub endpoint_kind: Option<EventKind>,
    pub received_at: DateTime<Utc>,
    /// `receivedAt` formatted once per request.
    pub received_at_text: &'a str,
    pub ip: Option<&'a str>,
    /// `sentAt` of the batch envelope, used for events that carry none.
    pub batch_sent_at: Option<&'a RawValue>,
    /// `context` and `integrations` of the batch envelope, merged into every event.
    pub batch_context: Option<serde_json::Value>,
    pub batch_integrations: Option<serde_json::Value>,
}

impl<'a> RequestInfo<'a> {
    pub fn new(endpoint_kind: Option<EventKind>, received_at: DateTime<Utc>, received_at_text: &'a str, ip: Option<&'a str>) -> Self {
        RequestInfo {
            endpoint_kind,
            received_at,
            received_at_text,
            ip,
            batch_sent_at: None,
            batch_context: None,
            batch_integrations: None,
        }
    }
}

/// A date-time field as sent.
enum Time<'a> {
    Absent,
    Valid(Cow<'a, str>, DateTime<FixedOffset>),
    /// Present but not an RFC 3339 string: repaired, and kept as sent.
    Invalid(&'a RawValue),
}

impl<'a> Time<'a> {
    fn of(f: &Field<'a>) -> Time<'a> {
        let Some(raw) = f.0.filter(|r| r.get() != "null") else { return Time::Absent };
        match f.as_str().and_then(|s| DateTime::parse_from_rfc3339(&s).ok().map(|t| (s, t))) {
            Some((s, t)) => Time::Valid(s, t),
            None => Time::Invalid(raw),
        }
    }

    fn valid(&self) -> Option<&DateTime<FixedOffset>> {
        match self {
            Time::Valid(_, t) => Some(t),
            _ => None,
        }
    }
}

/// The types the Segment spec gives the fields; `null` counts as absent everywhere.
fn check_types(head: &Head<'_>) -> Result<(), CollectError> {
    for (name, f) in [
        ("userId", &head.user_id),
        ("anonymousId", &head.anonymous_id),
        ("groupId", &head.group_id),
        ("previousId", &head.previous_id),
        ("messageId", &head.message_id),
    ] {
        check::id_or_absent(name, f.0)?;
    }
    check::string_or_absent("event", head.event.0)?;
    check::string_or_absent("name", head.name.0)?;
    check::object_or_absent("properties", head.properties.0)?;
    check::object_or_absent("traits", head.traits.0)?;
    check::object_or_absent("integrations", head.integrations.0)?;
    match head.context {
        Context::NotObject => Err(CollectError::InvalidEvent("context must be a JSON object".into())),
        Context::Object { traits, .. } => check::object_or_absent("context.traits", traits.0),
        Context::Absent | Context::Null => Ok(()),
    }
}

/// Checks one event and appends its enriched JSON to `out`.
pub fn enrich<'a>(raw: &'a str, info: &'a RequestInfo<'_>, out: &mut Vec<u8>) -> Result<Enriched<'a>, CollectError> {
    let raw = raw.trim();
    if !raw.starts_with('{') {
        return Err(CollectError::InvalidEvent("an event must be a JSON object".into()));
    }
    // Before the parse: serde_json would stop at its own limit with a less useful message.
    check::check_depth(raw.as_bytes())?;
    let head: Head<'a> = serde_json::from_str(raw).map_err(|e| CollectError::MalformedJson(e.to_string()))?;

    let kind = match (info.endpoint_kind, head.kind.as_str()) {
        (Some(k), None) if head.kind.is_null_or_absent() => k,
        (Some(k), Some(t)) if t == k.as_str() => k,
        (Some(k), _) => {
            return Err(CollectError::InvalidEvent(format!("type must be {:?} on /v1/{}", k.as_str(), k.as_str())))
        }
        (None, Some(t)) => EventKind::parse(&t).ok_or_else(|| {
            CollectError::InvalidEvent(format!(
                "unknown type {t:?}: expected track, identify, page, screen, group or alias"
            ))
        })?,
        (None, None) => return Err(CollectError::InvalidEvent("every event in a batch needs a \"type\"".into())),
    };
    check_types(&head)?;
    let Some(user) = head.user_id.id().or_else(|| head.anonymous_id.id()) else {
        return Err(CollectError::InvalidEvent(format!("{} event needs a non-blank userId or anonymousId", kind.as_str())));
    };
    let event_name = head.event.as_str();
    match kind {
        EventKind::Track if event_name.as_deref().is_none_or(|e| e.trim().is_empty()) => {
            return Err(CollectError::InvalidEvent("track event needs a non-empty \"event\" name".into()))
        }
        EventKind::Alias if !head.previous_id.is_valid_id() => {
            return Err(CollectError::InvalidEvent("alias event needs a non-blank \"previousId\"".into()))
        }
        EventKind::Group if !head.group_id.is_valid_id() => {
            return Err(CollectError::InvalidEvent("group event needs a non-blank \"groupId\"".into()))
        }
        _ => {}
    }
    if !head.message_id.is_null_or_absent() && !head.message_id.is_valid_id() {
        return Err(CollectError::InvalidEvent("messageId must be a non-blank string".into()));
    }
    let timestamp = Time::of(&head.timestamp);
    let original = Time::of(&head.original_timestamp);
    // The envelope's sentAt stands in for an event's missing one, and is checked the same way.
    let sent_from_batch = head.sent_at.is_null_or_absent() && info.batch_sent_at.is_some();
    let sent = if sent_from_batch { Time::of(&Field(info.batch_sent_at)) } else { Time::of(&head.sent_at) };
    let mut repairs: Vec<(&str, &RawValue)> = Vec::new();
    let mut repaired = [false; 3];
    for (i, t) in [&timestamp, &original, &sent].into_iter().enumerate() {
        if let Time::Invalid(value) = t {
            repairs.push((TIME_FIELDS[i], value));
            repaired[i] = true;
        }
    }

    // Event time corrected for the client's clock: receivedAt - (sentAt - originalTimestamp).
    // A repaired field counts as absent here: it says nothing about the client's clock.
    let computed_timestamp = if timestamp.valid().is_some() {
        None
    } else {
        Some(match (&original, sent.valid()) {
            (Time::Valid(_, o), Some(s)) => (info.received_at - (*s - *o)).to_rfc3339_opts(SecondsFormat::Millis, true),
            (Time::Valid(o, _), None) => o.to_string(),
            _ => info.received_at_text.to_string(),
        })
    };

    let context_ip = match (head.context, info.ip) {
        (_, None) => ContextIp::Keep,
        (Context::Absent, Some(ip)) => ContextIp::AddContext(ip),
        (Context::Null, Some(_)) => ContextIp::Slow,
        (Context::NotObject, Some(_)) => unreachable!("checked by check_types"),
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
    let message_id = match head.message_id.id() {
        Some(id) => id,
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            add.push(("messageId", json_string(&id)));
            Cow::Owned(id)
        }
    };
    add.push(("receivedAt", json_string(info.received_at_text)));
    match (&sent, sent_from_batch) {
        (Time::Valid(s, _), true) => add.push(("sentAt", json_string(s))),
        (Time::Invalid(_), _) => add.push(("sentAt", json_string(info.received_at_text))),
        _ => {}
    }
    if let Time::Invalid(_) = original {
        add.push(("originalTimestamp", json_string(info.received_at_text)));
    }
    if let Some(t) = &computed_timestamp {
        add.push(("timestamp", json_string(t)));
    }

    let slow = matches!(context_ip, ContextIp::Slow)
        || head.received_at.0.is_some()
        || head.kind.is_present_null() && info.endpoint_kind.is_some()
        || head.message_id.is_present_null()
        || head.timestamp.is_present_null()
        || head.sent_at.is_present_null() && sent_from_batch
        || head.write_key.0.is_some()
        || !repairs.is_empty()
        || info.batch_context.is_some()
        || info.batch_integrations.is_some();
    let mut integrations = head.integrations.0.filter(|r| r.get() != "null").map(|r| Cow::Borrowed(r.get()));
    if slow {
        if let Some(merged) = enrich_slow(raw, Slow { add: &add, ip: info.ip, repairs: &repairs, info }, out)? {
            integrations = Some(Cow::Owned(merged));
        }
    } else {
        splice(raw, &add, context_ip, out);
    }
    let head = EventHead {
        kind: Some(kind),
        event: event_name,
        user,
        message_id,
        received_at: Cow::Borrowed(info.received_at_text),
        integrations,
    };
    Ok(Enriched { kind, repaired, head, origin: raw })
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

/// What the slow path sets besides the fields of the fast path.
struct Slow<'s, 'r> {
    add: &'s [(&'s str, String)],
    ip: Option<&'s str>,
    /// Date-time fields as sent, when they were not RFC 3339.
    repairs: &'s [(&'s str, &'r RawValue)],
    info: &'s RequestInfo<'s>,
}

/// Slow path for rare shapes: parse, set, serialize. Returns the event's `integrations` when the
/// batch's were merged into them (the head must carry what was stored).
fn enrich_slow(raw: &str, slow: Slow<'_, '_>, out: &mut Vec<u8>) -> Result<Option<String>, CollectError> {
    let Slow { add, ip, repairs, info } = slow;
    let start = out.len();
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|e| CollectError::MalformedJson(e.to_string()))?;
    map.remove("writeKey");
    if let Some(batch) = &info.batch_context {
        check::merge_under(&mut map, "context", batch);
    }
    if let Some(batch) = &info.batch_integrations {
        check::merge_under(&mut map, "integrations", batch);
    }
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
    if !repairs.is_empty() {
        note_repairs(&mut map, repairs)?;
    }
    serde_json::to_writer(&mut *out, &map).map_err(|e| CollectError::MalformedJson(e.to_string()))?;
    // Merging and the repair note move values deeper: the result must still be readable downstream.
    check::check_depth(&out[start..])?;
    Ok(info.batch_integrations.as_ref().and(map.get("integrations")).filter(|v| v.is_object()).map(|v| v.to_string()))
}

/// Keeps the date-times the client sent under `context.sluice.invalid_timestamps` (`context.sluice`
/// belongs to Sluice: a client value there that is not an object is replaced).
fn note_repairs(map: &mut serde_json::Map<String, serde_json::Value>, repairs: &[(&str, &RawValue)]) -> Result<(), CollectError> {
    use serde_json::Value;
    let ctx = map.entry("context").or_insert_with(|| Value::Object(Default::default()));
    if ctx.is_null() {
        *ctx = Value::Object(Default::default());
    }
    let ctx = ctx.as_object_mut().ok_or_else(|| CollectError::InvalidEvent("context must be a JSON object".into()))?;
    let sluice = ctx.entry("sluice").or_insert_with(|| Value::Object(Default::default()));
    if !sluice.is_object() {
        *sluice = Value::Object(Default::default());
    }
    let mut sent = serde_json::Map::new();
    for (field, value) in repairs {
        sent.insert((*field).to_string(), serde_json::from_str(value.get()).map_err(|e| CollectError::MalformedJson(e.to_string()))?);
    }
    sluice.as_object_mut().expect("made an object above").insert("invalid_timestamps".into(), Value::Object(sent));
    Ok(())
}

#[cfg(test)]
mod tests;
