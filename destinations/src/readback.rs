//! Reading back what a destination holds: the `messageId`s that landed, for `sluice reconcile`
//! (and any test that checks a sink end to end). Each sink's reader lives next to its writer
//! (`files::landed_ids`, `s3::landed_ids`, `SnowflakeDestination::landed_ids`); this module has
//! what they share.
//!
//! Ids are kept compactly because reconciliation deals in tens of millions: a UUID (the form
//! every SDK and the collector generate) is stored as a `u128`, anything else as a string.

use serde::Deserialize;

/// The ids found in a destination, with repeats (a repeat is a duplicate delivery).
#[derive(Debug, Default)]
pub struct LandedIds {
    pub uuids: Vec<u128>,
    pub others: Vec<String>,
    /// Events without a `messageId` (or lines that are not JSON objects).
    pub without_id: u64,
    /// Objects or files read.
    pub objects: u64,
}

impl LandedIds {
    pub fn push(&mut self, id: &str) {
        match parse_uuid(id) {
            Some(u) => self.uuids.push(u),
            None => self.others.push(id.to_string()),
        }
    }

    pub fn len(&self) -> usize {
        self.uuids.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn append(&mut self, mut other: LandedIds) {
        self.uuids.append(&mut other.uuids);
        self.others.append(&mut other.others);
        self.without_id += other.without_id;
        self.objects += other.objects;
    }

    /// Adds the `messageId` of every line of an NDJSON text.
    pub fn push_ndjson(&mut self, text: &[u8]) {
        #[derive(Deserialize)]
        struct Id<'a> {
            #[serde(rename = "messageId", borrow, default)]
            message_id: Option<std::borrow::Cow<'a, str>>,
        }
        for line in text.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Id<'_>>(line) {
                Ok(Id { message_id: Some(id) }) => self.push(&id),
                _ => self.without_id += 1,
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A hyphenated UUID (`8-4-4-4-12` hex digits, any case) as a number; `None` for anything else.
pub fn parse_uuid(s: &str) -> Option<u128> {
    let b = s.as_bytes();
    if b.len() != 36 || b[8] != b'-' || b[13] != b'-' || b[18] != b'-' || b[23] != b'-' {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        v = (v << 4) | u128::from(hex(c)?);
    }
    Some(v)
}

/// The hyphenated lower-case form of a parsed UUID.
pub fn format_uuid(v: u128) -> String {
    let h = format!("{v:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_and_other_ids_are_kept_as_text() {
        let id = "6F1C0D3E-5a8b-4c3e-9d2f-0b7e8a9c1d2e";
        assert_eq!(format_uuid(parse_uuid(id).unwrap()), id.to_ascii_lowercase());
        for bad in ["", "6f1c0d3e5a8b4c3e9d2f0b7e8a9c1d2e", "6f1c0d3e-5a8b-4c3e-9d2f-0b7e8a9c1d2g", "m-1"] {
            assert_eq!(parse_uuid(bad), None, "{bad}");
        }
        let mut ids = LandedIds::default();
        ids.push_ndjson(b"{\"messageId\":\"6f1c0d3e-5a8b-4c3e-9d2f-0b7e8a9c1d2e\",\"properties\":{\"messageId\":\"x\"}}\n{\"messageId\":\"m1\"}\n{\"type\":\"track\"}\nnot json\n\n");
        assert_eq!(ids.uuids.len(), 1);
        assert_eq!(ids.others, vec!["m1".to_string()]);
        assert_eq!(ids.without_id, 2);
    }
}
