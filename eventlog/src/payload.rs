//! A record's payload: what the log keeps of one event, apart from how a backend frames it (the
//! embedded log wraps each payload in `len | crc`, see the crate doc; a backend whose messages
//! carry their own length and checksum can store the payload as it is).
//!
//! ```text
//! payload = version:u8 (=3) source_len:u8 source key_id_len:u8 key_id head_len:varint head event
//!         | version:u8 (=2) source_len:u8 source key_id_len:u8 key_id event      (read, never written)
//!         | version:u8 (=1) source_len:u8 source event                           (read, never written)
//! ```
//! `head` is an [`EventHead`] as [`EventHead::encode`] writes it (its references point into
//! `event`), or nothing (`head_len` 0) for an
//! event that is not a JSON object (which the collector never stores; tools and tests may).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::head::{put_varint, take_varint, UserAt};
use crate::{EventHead, Record};

/// The version [`encode`] writes.
pub const VERSION: u8 = 3;

/// Appends one payload to `out`. `head` is `None` only for an event that is not a JSON object.
/// `source` and `write_key_id` are cut at 255 bytes (config ids are short). Returns where the
/// head's user key lies in `out` (empty without a head).
/// `origin` is the text `head` was read from, if `event` begins with it (see [`EventHead::encode`]).
pub fn encode(out: &mut Vec<u8>, source: &str, write_key_id: &str, head: Option<&EventHead<'_>>, event: &[u8], origin: &[u8]) -> Range<usize> {
    let source = &source.as_bytes()[..source.len().min(255)];
    let key_id = &write_key_id.as_bytes()[..write_key_id.len().min(255)];
    out.push(VERSION);
    out.push(source.len() as u8);
    out.extend_from_slice(source);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id);
    let user = match head {
        None => {
            out.push(0);
            out.len()..out.len()
        }
        Some(head) => {
            // One byte of length almost always does (a head is mostly references): reserve it,
            // and make room for more only for a long head.
            let len_at = out.len();
            out.push(0);
            let user = head.encode(event, origin, out);
            let head_len = out.len() - len_at - 1;
            let mut shift = 0;
            if head_len < 0x80 {
                out[len_at] = head_len as u8;
            } else {
                let mut len = Vec::with_capacity(5);
                put_varint(&mut len, head_len as u64);
                shift = len.len() - 1;
                out.splice(len_at..=len_at, len);
            }
            match user {
                UserAt::Inline(r) => r.start + shift..r.end + shift,
                UserAt::Event(r) => out.len() + r.start..out.len() + r.end,
            }
        }
    };
    out.extend_from_slice(event);
    user
}

/// Where the parts of a payload are, as ranges of the payload.
#[derive(Debug, Clone)]
pub struct Parts {
    pub version: u8,
    pub source: Range<usize>,
    pub write_key_id: Range<usize>,
    /// The encoded head: `None` for versions 1 and 2 (read the event for it), empty for an event
    /// that is not a JSON object.
    pub head: Option<Range<usize>>,
    pub event: Range<usize>,
}

/// Finds the parts of `payload` and checks them (lengths, the head's encoding); the event
/// itself is not looked at.
pub fn decode(payload: &[u8]) -> Result<Parts, String> {
    let (&version, _) = payload.split_first().ok_or("empty payload")?;
    let source_len = *payload.get(1).ok_or("payload cut before its source")? as usize;
    if 2 + source_len > payload.len() {
        return Err("source longer than record".into());
    }
    let source = 2..2 + source_len;
    if version == 1 {
        return Ok(Parts { version, source, write_key_id: 0..0, head: None, event: 2 + source_len..payload.len() });
    }
    if version != 2 && version != VERSION {
        return Err(format!("unknown record version {version}"));
    }
    let Some(&key_len) = payload.get(source.end) else {
        return Err("write key id missing".into());
    };
    let key_at = source.end + 1;
    if key_at + key_len as usize > payload.len() {
        return Err("write key id longer than record".into());
    }
    let write_key_id = key_at..key_at + key_len as usize;
    if version == 2 {
        return Ok(Parts { version, source, write_key_id: write_key_id.clone(), head: None, event: write_key_id.end..payload.len() });
    }
    let (head_len, rest) = take_varint(&payload[write_key_id.end..]).ok_or("event head length cut short")?;
    let head_at = payload.len() - rest.len();
    let head_end = usize::try_from(head_len).ok().and_then(|n| head_at.checked_add(n)).filter(|&e| e <= payload.len());
    let Some(head_end) = head_end else {
        return Err("event head longer than record".into());
    };
    if head_end > head_at {
        EventHead::decode(&payload[head_at..head_end], &payload[head_end..])?;
    }
    Ok(Parts { version, source, write_key_id, head: Some(head_at..head_end), event: head_end..payload.len() })
}

/// The encoded head of an event stored without one (versions 1 and 2): one parse of the event.
/// Empty when the event is not a JSON object.
pub(crate) fn head_of(event: &[u8]) -> Bytes {
    match EventHead::parse(event) {
        Ok(head) => {
            let mut out = Vec::with_capacity(32);
            head.encode(event, event, &mut out);
            out.into()
        }
        Err(_) => Bytes::new(),
    }
}

impl Record {
    /// A record from a payload found at `offset` (by a backend that stores payloads as they
    /// are); an error when the payload is not one (see [`decode`]).
    pub fn from_payload(offset: u64, payload: Bytes) -> Result<Record, String> {
        let parts = decode(&payload)?;
        let text = |r: &Range<usize>| -> Arc<str> { Arc::from(String::from_utf8_lossy(&payload[r.clone()]).as_ref()) };
        Ok(Record::from_parts(offset, &payload, &parts, text(&parts.source), text(&parts.write_key_id)))
    }

    /// A record from the parts of `payload` ([`decode`]), with its source and write key id
    /// already made (a reader interns them).
    pub fn from_parts(offset: u64, payload: &Bytes, parts: &Parts, source: Arc<str>, write_key_id: Arc<str>) -> Record {
        let event = payload.slice(parts.event.clone());
        let head = match &parts.head {
            Some(r) => payload.slice(r.clone()),
            None => head_of(&event),
        };
        Record { partition: None, offset, source, write_key_id, head, event }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_decodes_to_what_was_encoded() {
        let head = EventHead { user: "u-7".into(), message_id: "m".into(), ..Default::default() };
        let mut out = b"xx".to_vec();
        let user = encode(&mut out, "web", "k1", Some(&head), br#"{"userId":"u-7"}"#, &[]);
        assert_eq!(&out[user], b"u-7");
        let record = Record::from_payload(9, Bytes::copy_from_slice(&out[2..])).unwrap();
        assert_eq!((record.offset, &*record.source, &*record.write_key_id), (9, "web", "k1"));
        assert_eq!(&record.event[..], br#"{"userId":"u-7"}"#);
        assert_eq!(record.head(), Some(head));
    }

    /// A head of 128 bytes or more needs a longer length prefix than the one byte reserved for
    /// it: the head moves right, and the user key's place must move with it.
    #[test]
    fn a_long_head_keeps_its_user_key_in_place() {
        let user = "u".repeat(300);
        let head = EventHead { user: user.as_str().into(), message_id: "generated".into(), ..Default::default() };
        let mut out = b"xx".to_vec();
        // The event does not hold the user, so the head copies it (over 300 bytes).
        let range = encode(&mut out, "web", "k1", Some(&head), br#"{"userId":"someone-else"}"#, &[]);
        assert_eq!(&out[range], user.as_bytes());
        let record = Record::from_payload(0, Bytes::copy_from_slice(&out[2..])).unwrap();
        assert_eq!(record.head(), Some(head));
        assert_eq!(&record.event[..], br#"{"userId":"someone-else"}"#);
    }

    #[test]
    fn an_event_without_a_head_reads_as_one() {
        let mut out = Vec::new();
        let user = encode(&mut out, "web", "", None, b"not json", &[]);
        assert!(user.is_empty());
        let record = Record::from_payload(0, out.into()).unwrap();
        assert_eq!((&record.event[..], record.head()), (&b"not json"[..], None));
    }

    #[test]
    fn a_head_that_overruns_the_payload_is_refused() {
        let mut out = Vec::new();
        encode(&mut out, "web", "", Some(&EventHead::default()), b"{}", &[]);
        let head_len_at = 1 + 1 + 3 + 1;
        out[head_len_at] = 100;
        assert!(decode(&out).unwrap_err().contains("longer than record"));
        out[head_len_at] = 3;
        assert!(decode(&out).is_err(), "a head length that cuts the head short");
    }
}
