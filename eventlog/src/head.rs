//! An event's head: the few fields the stages after the collector decide by (type and name for
//! filters, the user for ordering lanes and as a partition key, `messageId`, `receivedAt` for
//! lag, `integrations` for routing). The collector learns them in the pass that validates the
//! event and the log keeps them next to it (record version 3), so no later stage parses the
//! event again to find them. Records written before version 3 get theirs from one parse of the
//! event when they are read ([`EventHead::parse`]).
//!
//! # Encoding (inside a version 3 payload)
//! ```text
//! head   = kind:u8 field{5}          kind: 0 = none of the six, 1..=6 in `EventKind::ALL` order
//! field  = n:varint bytes[n - 1]     n = 0: absent; fields in order: event, user, messageId,
//!                                    receivedAt, integrations (JSON text of the object)
//! varint = unsigned LEB128, at most 5 bytes
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The event types of the Segment / RudderStack spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventKind {
    pub const ALL: [EventKind; 6] =
        [EventKind::Track, EventKind::Identify, EventKind::Page, EventKind::Screen, EventKind::Group, EventKind::Alias];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Track => "track",
            EventKind::Identify => "identify",
            EventKind::Page => "page",
            EventKind::Screen => "screen",
            EventKind::Group => "group",
            EventKind::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Position in [`EventKind::ALL`]; also what indexes per-type counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the stages after the collector know of an event without reading it. Borrowed from the
/// record (or the request) where it can be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventHead<'a> {
    /// `type`; `None` when it is not one of the six (only in records older than version 3).
    pub kind: Option<EventKind>,
    /// `event`, when it is a string (a track event's name).
    pub event: Option<Cow<'a, str>>,
    /// The user the event belongs to: `userId` when it is an id, else `anonymousId` (see
    /// [`id_text`]); empty when neither is. One user's events keep their order by it.
    pub user: Cow<'a, str>,
    /// `messageId` as text (empty when the event has none, only in records older than version 3).
    pub message_id: Cow<'a, str>,
    /// `receivedAt` as the collector wrote it (RFC 3339).
    pub received_at: Cow<'a, str>,
    /// The `integrations` object as JSON text, when the event has one.
    pub integrations: Option<Cow<'a, str>>,
}

/// An id's text when it is one: a non-blank string (unescaped) or a number (its JSON text; some
/// SDKs send numeric user ids). Anything else, `null` included, is not an id.
pub fn id_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<Cow<'_, str>>(text).ok().filter(|s| !s.trim().is_empty()),
        b'-' | b'0'..=b'9' => Some(Cow::Borrowed(text)),
        _ => None,
    }
}

/// The top-level fields a head is made of, every one kept raw so that an odd type in one of them
/// leaves it out of the head instead of failing the whole parse.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "userId")]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "anonymousId")]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "messageId")]
    message_id: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "receivedAt")]
    received_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    integrations: Option<&'a RawValue>,
}

fn string_of(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let text = raw?.get();
    if text.starts_with('"') {
        serde_json::from_str(text).ok()
    } else {
        None
    }
}

impl<'a> EventHead<'a> {
    /// The head of a stored event, from one parse of its top level (for records written before
    /// version 3, dead letters, and tools). Fails only when `event` is not a JSON object.
    pub fn parse(event: &'a [u8]) -> Result<EventHead<'a>, serde_json::Error> {
        // A derived struct would take an array too (its fields by position).
        if event.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(serde::de::Error::custom("the event is not a JSON object"));
        }
        let f: Fields<'a> = serde_json::from_slice(event)?;
        Ok(EventHead {
            kind: string_of(f.kind).and_then(|k| EventKind::parse(&k)),
            event: string_of(f.event),
            user: f.user_id.and_then(id_text).or_else(|| f.anonymous_id.and_then(id_text)).unwrap_or_default(),
            message_id: f.message_id.and_then(id_text).unwrap_or_default(),
            received_at: string_of(f.received_at).unwrap_or_default(),
            integrations: f
                .integrations
                .filter(|r| r.get().starts_with('{'))
                .map(|r| Cow::Borrowed(r.get())),
        })
    }

    /// Appends the encoding described in the module doc.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.kind.map_or(0, |k| k.index() as u8 + 1));
        for field in [
            self.event.as_deref(),
            Some(&*self.user),
            Some(&*self.message_id),
            Some(&*self.received_at),
            self.integrations.as_deref(),
        ] {
            match field {
                None => out.push(0),
                Some(s) => {
                    put_varint(out, s.len() as u64 + 1);
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    /// Bytes [`EventHead::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        let field = |f: Option<&str>| f.map_or(1, |s| varint_len(s.len() as u64 + 1) + s.len());
        1 + field(self.event.as_deref())
            + field(Some(&self.user))
            + field(Some(&self.message_id))
            + field(Some(&self.received_at))
            + field(self.integrations.as_deref())
    }

    /// Reads what [`EventHead::encode`] wrote; `bytes` must hold exactly one head.
    pub fn decode(bytes: &'a [u8]) -> Result<EventHead<'a>, String> {
        let (&kind, mut rest) = bytes.split_first().ok_or("empty event head")?;
        let kind = match kind {
            0 => None,
            k @ 1..=6 => Some(EventKind::ALL[k as usize - 1]),
            k => return Err(format!("unknown event type code {k} in the event head")),
        };
        let mut field = || -> Result<Option<&'a str>, String> {
            let (n, after) = take_varint(rest).ok_or("event head cut short")?;
            if n == 0 {
                rest = after;
                return Ok(None);
            }
            let len = usize::try_from(n - 1).map_err(|_| "event head field too long")?;
            if len > after.len() {
                return Err("event head field runs past the head".into());
            }
            let (text, after) = after.split_at(len);
            rest = after;
            std::str::from_utf8(text).map(Some).map_err(|_| "event head field is not UTF-8".into())
        };
        let event = field()?.map(Cow::Borrowed);
        let user = Cow::Borrowed(field()?.unwrap_or_default());
        let message_id = Cow::Borrowed(field()?.unwrap_or_default());
        let received_at = Cow::Borrowed(field()?.unwrap_or_default());
        let integrations = field()?.map(Cow::Borrowed);
        if !rest.is_empty() {
            return Err(format!("{} stray bytes after the event head", rest.len()));
        }
        Ok(EventHead { kind, event, user, message_id, received_at, integrations })
    }

    /// Where the user key lies in an encoding of this head starting at `at` (for [`crate::AppendBatch`]).
    pub(crate) fn user_range(&self, at: usize) -> std::ops::Range<usize> {
        let event_len = self.event.as_ref().map_or(1, |e| varint_len(e.len() as u64 + 1) + e.len());
        let start = at + 1 + event_len + varint_len(self.user.len() as u64 + 1);
        start..start + self.user.len()
    }
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(crate) fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// One varint from the start of `bytes`, and what follows it; `None` when cut short or longer
/// than 5 bytes (lengths here fit 32 bits).
pub(crate) fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_survives_its_encoding_and_finds_its_user() {
        let long = "x".repeat(300);
        let heads = [
            EventHead::default(),
            EventHead {
                kind: Some(EventKind::Track),
                event: Some("Post Created".into()),
                user: "u-1".into(),
                message_id: "m-1".into(),
                received_at: "2026-12-02T01:00:00.000Z".into(),
                integrations: Some(r#"{"All":false}"#.into()),
            },
            EventHead { kind: Some(EventKind::Alias), event: Some("".into()), user: long.as_str().into(), ..Default::default() },
        ];
        for head in heads {
            let mut buf = b"prefix".to_vec();
            head.encode(&mut buf);
            assert_eq!(buf.len() - 6, head.encoded_len());
            assert_eq!(EventHead::decode(&buf[6..]).unwrap(), head);
            assert_eq!(&buf[head.user_range(6)], head.user.as_bytes());
        }
    }

    #[test]
    fn a_damaged_head_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        EventHead { user: "someone".into(), ..Default::default() }.encode(&mut buf);
        for cut in 0..buf.len() {
            assert!(EventHead::decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = buf.clone();
        extra.push(0);
        assert!(EventHead::decode(&extra).unwrap_err().contains("stray"));
        buf[0] = 9;
        assert!(EventHead::decode(&buf).unwrap_err().contains("type code"));
    }

    #[test]
    fn parsing_takes_the_user_by_the_collectors_id_rule() {
        fn head(e: &str) -> EventHead<'_> {
            EventHead::parse(e.as_bytes()).unwrap()
        }
        assert_eq!(head(r#"{"userId":"u","anonymousId":"a"}"#).user, "u");
        assert_eq!(head(r#"{"userId":" ","anonymousId":"a"}"#).user, "a", "a blank userId is not an id");
        assert_eq!(head(r#"{"userId":null,"anonymousId":"a"}"#).user, "a");
        assert_eq!(head(r#"{"userId":42}"#).user, "42");
        assert_eq!(head(r#"{"userId":"caf\u00e9"}"#).user, "café");
        let h = head(r#"{"type":"track","event":"E","messageId":7,"receivedAt":"t","integrations":{"S3":false}}"#);
        assert_eq!((h.kind, h.event.as_deref(), &*h.message_id, &*h.received_at), (Some(EventKind::Track), Some("E"), "7", "t"));
        assert_eq!(h.integrations.as_deref(), Some(r#"{"S3":false}"#));
        let odd = head(r#"{"type":"nonsense","event":3,"integrations":"x"}"#);
        assert_eq!((odd.kind, odd.event, odd.integrations), (None, None, None));
        assert!(EventHead::parse(b"[1]").is_err());
        assert!(EventHead::parse(b"not json").is_err());
    }
}
