//! An event's head: the few fields the stages after the collector decide by (type and name for
//! filters, the user for ordering lanes and as a partition key, `messageId`, `receivedAt` for
//! lag, `integrations` for routing). The collector learns them in the pass that validates the
//! event and the log keeps them next to it (record version 3), so no later stage parses the
//! event again to find them. Records written before version 3 get theirs from one parse of the
//! event when they are read ([`EventHead::parse`]).
//!
//! # Encoding (inside a version 3 payload)
//! ```text
//! head   = kind:u8 field{5}          kind & 0x7f: 0 = none of the six, 1..=6 in `EventKind::ALL`
//!                                    order; fields in order: event, user, messageId, receivedAt,
//!                                    integrations (JSON text of the object)
//! kind & 0x80 set (written today):
//! field  = 0:varint                  absent
//!        | n:varint bytes[(n-1)/2]   n odd: the text inline
//!        | n:varint len:varint       n even: the text is event[n/2 - 1 .. n/2 - 1 + len]
//! kind & 0x80 clear (the first version 3 heads, still read):
//! field  = n:varint bytes[n - 1]     n = 0: absent
//! varint = unsigned LEB128, at most 5 bytes
//! ```
//! Every field but an id the collector generated is text the event itself holds, so a head is
//! mostly references into the event: about 12 bytes instead of about 90 copied ones. Ingest is
//! bound by the bytes it syncs to disk, and the copies cost 11% of its batch throughput
//! (BENCHMARKS.md, issue 16). A reference only claims that those bytes of the event equal the
//! field's text, which the encoder checks by finding them there, so it is right wherever the
//! bytes happen to be.

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
        b'"' => string_text(text).filter(|s| !s.trim().is_empty()),
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
    string_text(raw?.get())
}

/// The text of a JSON string given as its raw JSON (`"..."`), borrowed when it has no escapes;
/// `None` when `raw` is not a string. `raw` must be valid JSON (a `RawValue`'s text). serde's `Cow<str>` always copies, and a borrowed text lets
/// the log store a field as a reference into the event ([`EventHead::encode`]).
pub fn string_text(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
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

    /// Appends the encoding described in the module doc, each field found in `event` (the
    /// event this head is stored with) as a reference to it. `origin` is the text the head was
    /// read from when the event begins with it byte for byte (the collector's request text, to
    /// which it appends fields; or the event itself): a field borrowed from it is checked at the
    /// same offset in `event` instead of searched for. Returns where the user key is.
    pub fn encode(&self, event: &[u8], origin: &[u8], out: &mut Vec<u8>) -> UserAt {
        out.push(self.kind.map_or(0, |k| k.index() as u8 + 1) | TAGGED);
        let mut user = UserAt::Inline(0..0);
        for (i, field) in [
            self.event.as_deref(),
            Some(&*self.user),
            Some(&*self.message_id),
            Some(&*self.received_at),
            self.integrations.as_deref(),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(text) = field else {
                out.push(0);
                continue;
            };
            match locate(event, text.as_bytes(), origin) {
                Some(start) => {
                    put_varint(out, 2 * (start as u64 + 1));
                    put_varint(out, text.len() as u64);
                    if i == 1 {
                        user = UserAt::Event(start..start + text.len());
                    }
                }
                None => {
                    put_varint(out, 2 * text.len() as u64 + 1);
                    if i == 1 {
                        user = UserAt::Inline(out.len()..out.len() + text.len());
                    }
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        user
    }

    /// Reads what [`EventHead::encode`] wrote; `bytes` must hold exactly one head, and `event`
    /// is the event it was stored with.
    pub fn decode(bytes: &'a [u8], event: &'a [u8]) -> Result<EventHead<'a>, String> {
        let (&kind, mut rest) = bytes.split_first().ok_or("empty event head")?;
        let tagged = kind & TAGGED != 0;
        let kind = match kind & !TAGGED {
            0 => None,
            k @ 1..=6 => Some(EventKind::ALL[k as usize - 1]),
            k => return Err(format!("unknown event type code {k} in the event head")),
        };
        let mut field = || -> Result<Option<&'a str>, String> {
            let (n, after) = take_varint(rest).ok_or("event head cut short")?;
            rest = after;
            if n == 0 {
                return Ok(None);
            }
            let text = if tagged && n % 2 == 0 {
                let (len, after) = take_varint(rest).ok_or("event head cut short")?;
                rest = after;
                let start = usize::try_from(n / 2 - 1).map_err(|_| "event head reference out of range")?;
                let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= event.len());
                let end = end.ok_or("event head reference runs past the event")?;
                &event[start..end]
            } else {
                let len = usize::try_from(if tagged { (n - 1) / 2 } else { n - 1 }).map_err(|_| "event head field too long")?;
                if len > rest.len() {
                    return Err("event head field runs past the head".into());
                }
                let (text, after) = rest.split_at(len);
                rest = after;
                text
            };
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
}

/// Set in a head's kind byte: its fields are tagged, inline or references into the event.
const TAGGED: u8 = 0x80;

/// Shorter texts are written inline: a reference takes at least three bytes.
const MIN_REFERENCE: usize = 3;

/// How many places ending in the text's last byte are tried before it is written inline.
const MAX_CANDIDATES: usize = 32;

/// How far right of its place in the origin a borrowed text is looked for: what the collector
/// inserts before the fields it read (the client's ip, at the head of `context`) is shorter.
const MAX_SHIFT: usize = 128;

/// Where `text` is in `event`, if it is cheap to find: for a text borrowed from `origin`, at its
/// offset there or a little to the right of it; else ending at one of the last few occurrences
/// of its last byte (what the collector adds, like `receivedAt`, is appended at the end). A
/// general substring search (memmem) cost 8% of ingest CPU in setting up its searchers, for a
/// ~900-byte event.
fn locate(event: &[u8], text: &[u8], origin: &[u8]) -> Option<usize> {
    if text.len() < MIN_REFERENCE {
        return None;
    }
    let (at, from) = (text.as_ptr() as usize, origin.as_ptr() as usize);
    if at >= from && at + text.len() <= from + origin.len() {
        let start = at - from;
        let window = event.get(start..).map_or(&[][..], |w| &w[..w.len().min(text.len() + MAX_SHIFT)]);
        if let Some(i) = memchr::memchr_iter(text[0], window).find(|&i| window[i..].starts_with(text)) {
            return Some(start + i);
        }
    }
    let last = *text.last()?;
    memchr::memrchr_iter(last, event)
        .take(MAX_CANDIDATES)
        .filter_map(|end| (end + 1).checked_sub(text.len()))
        .find(|&start| &event[start..start + text.len()] == text)
}

/// Where [`EventHead::encode`] left the user key: in what it appended, or in the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAt {
    Inline(std::ops::Range<usize>),
    Event(std::ops::Range<usize>),
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
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

    fn chat_event() -> String {
        r#"{"type":"track","event":"Post Created","userId":"u-1","messageId":"9f3c2b1e-77aa-4d1e-9c55-0d1f2e3a4b5c","properties":{"channel":"town-square"},"integrations":{"All":false},"receivedAt":"2026-12-02T01:00:00.000Z"}"#.to_string()
    }

    fn heads() -> Vec<EventHead<'static>> {
        let long: &'static str = Box::leak("x".repeat(300).into_boxed_str());
        vec![
            EventHead::default(),
            EventHead {
                kind: Some(EventKind::Track),
                event: Some("Post Created".into()),
                user: "u-1".into(),
                message_id: "9f3c2b1e-77aa-4d1e-9c55-0d1f2e3a4b5c".into(),
                received_at: "2026-12-02T01:00:00.000Z".into(),
                integrations: Some(r#"{"All":false}"#.into()),
            },
            // Texts the event does not hold (a generated id, a merged object) are inline.
            EventHead { kind: Some(EventKind::Page), message_id: "generated-id".into(), integrations: Some(r#"{"S3":true}"#.into()), ..Default::default() },
            EventHead { kind: Some(EventKind::Alias), event: Some("".into()), user: long.into(), ..Default::default() },
        ]
    }

    #[test]
    fn a_head_survives_its_encoding_and_finds_its_user() {
        let event = chat_event();
        for head in heads() {
            let mut buf = b"prefix".to_vec();
            let user = head.encode(event.as_bytes(), &[], &mut buf);
            assert_eq!(EventHead::decode(&buf[6..], event.as_bytes()).unwrap(), head);
            let user_bytes = match user {
                UserAt::Inline(r) => &buf[r],
                UserAt::Event(r) => &event.as_bytes()[r],
            };
            assert_eq!(user_bytes, head.user.as_bytes());
        }
    }

    /// A field borrowed from the text the event was made from is found at its place, even where
    /// the same bytes come earlier in the event.
    #[test]
    fn a_field_borrowed_from_the_origin_is_referenced_where_it_was_read() {
        let origin = r#"{"properties":{"note":"u-1"},"userId":"u-1"}"#;
        let event = format!("{}{}", &origin[..origin.len() - 1], r#","receivedAt":"2026-12-02T01:00:00.000Z"}"#);
        let head = EventHead { user: Cow::Borrowed(&origin[39..42]), received_at: "2026-12-02T01:00:00.000Z".into(), ..Default::default() };
        assert_eq!(&*head.user, "u-1");
        let mut buf = Vec::new();
        assert_eq!(head.encode(event.as_bytes(), origin.as_bytes(), &mut buf), UserAt::Event(39..42));
        assert_eq!(EventHead::decode(&buf, event.as_bytes()).unwrap(), head);
        assert!(buf.len() <= 8, "both fields are references: {} bytes", buf.len());
    }

    #[test]
    fn fields_the_event_holds_are_references_not_copies() {
        let event = chat_event();
        let head = &heads()[1];
        let mut buf = Vec::new();
        assert_eq!(head.encode(event.as_bytes(), &[], &mut buf), UserAt::Event(49..52));
        let copied: usize = [12, 3, 36, 24, 13].iter().sum();
        assert!(buf.len() <= 16, "{} bytes for a head whose fields are {copied} bytes of the event", buf.len());
    }

    /// The first version 3 heads copied every field; data directories holding them still open.
    #[test]
    fn untagged_heads_of_the_first_version_3_records_still_read() {
        let mut old = vec![1u8]; // track, no tag
        for field in [Some("Post Created"), Some("u-1"), Some("m-1"), Some("2026-12-02T01:00:00.000Z"), None] {
            match field {
                None => old.push(0),
                Some(s) => {
                    put_varint(&mut old, s.len() as u64 + 1);
                    old.extend_from_slice(s.as_bytes());
                }
            }
        }
        let head = EventHead::decode(&old, b"{}").unwrap();
        assert_eq!((head.kind, head.event.as_deref(), &*head.user, &*head.message_id), (Some(EventKind::Track), Some("Post Created"), "u-1", "m-1"));
        assert_eq!((&*head.received_at, head.integrations), ("2026-12-02T01:00:00.000Z", None));
    }

    #[test]
    fn a_damaged_head_is_an_error_not_a_panic() {
        let event = chat_event();
        for (i, head) in heads().into_iter().enumerate() {
            let mut buf = Vec::new();
            head.encode(event.as_bytes(), &[], &mut buf);
            for cut in 0..buf.len() {
                assert!(EventHead::decode(&buf[..cut], event.as_bytes()).is_err(), "cut at {cut}");
            }
            let mut extra = buf.clone();
            extra.push(0);
            assert!(EventHead::decode(&extra, event.as_bytes()).unwrap_err().contains("stray"));
            if i == 1 {
                // The same head read against a shorter event: its references run past it.
                assert!(EventHead::decode(&buf, &event.as_bytes()[..20]).is_err());
            }
            buf[0] = 9 | TAGGED;
            assert!(EventHead::decode(&buf, event.as_bytes()).unwrap_err().contains("type code"));
        }
    }
    #[test]
    fn string_texts_borrow_unless_they_have_escapes() {
        assert!(matches!(string_text(r#""u-1""#), Some(Cow::Borrowed("u-1"))));
        assert_eq!(string_text(r#""caf\u00e9 \"x\"""#).as_deref(), Some("café \"x\""));
        assert_eq!(string_text(r#""""#).as_deref(), Some(""));
        assert_eq!((string_text("42"), string_text("null"), string_text("\"")), (None, None, None));
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
