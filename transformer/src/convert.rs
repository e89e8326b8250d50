//! Stored event bytes <-> Rhai values.
//!
//! Both directions are written by hand rather than through rhai's serde support: the profile of
//! the scrub_pii chain showed parsing at over half of the whole cost, a fifth of it because
//! rhai's serde visitor builds every object twice (a `BTreeMap` of its own, then collected again
//! into a `Map`), and the rest in serde's generic visitor machinery. Here a JSON object becomes a
//! `Map` built once in bulk from its sorted entries, a string an `ImmutableString` straight from
//! the input slice when it has no escapes, and output is written into one buffer.
//!
//! What JSON accepts is exactly what `serde_json` accepts (strict grammar, UTF-8, surrogate
//! pairs, no trailing characters) except nesting: at most `MAX_EVENT_DEPTH` levels, the limit the
//! collector enforces at ingest (serde_json allows 128), and values map the same way rhai's serde
//! support mapped them: integers that fit `i64` are integers, larger ones and numbers with a
//! fraction or exponent are floats (and `-0`, as serde_json reads it). Floats are parsed with Rust's correctly rounded parser;
//! `serde_json` (without `float_roundtrip`) can be one unit in the last place off for inputs with
//! more than ~17 significant digits, so those now round-trip exactly.
//!
//! Rhai maps are ordered by key, so an event comes out with its keys sorted; JSON consumers do
//! not depend on key order.

use rhai::{Array, Dynamic, ImmutableString, Map, FLOAT, INT};

use crate::TransformError;

/// The log's promise (`sluice_eventlog::MAX_EVENT_DEPTH`, enforced by the collector): whatever the
/// collector acknowledged, this parser reads. Deeper is refused rather than risking the stack.
const MAX_DEPTH: usize = sluice_eventlog::MAX_EVENT_DEPTH;

/// Parses one stored event, which must be a JSON object.
pub fn event_from_json(bytes: &[u8]) -> Result<Dynamic, TransformError> {
    let value = parse(bytes).map_err(TransformError::BadEvent)?;
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
/// become strings; non-finite floats become `null` (both as rhai's serde support does).
pub fn event_to_json(value: &Dynamic) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    write_value(&mut out, value);
    out
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

/// Any JSON value (used for events and in tests).
pub fn parse(bytes: &[u8]) -> Result<Dynamic, String> {
    // Validating UTF-8 once up front lets every string be sliced out of `text` without a
    // second check; invalid bytes outside strings would be syntax errors anyway.
    let text = sluice_eventlog::skim::utf8(bytes)?;
    let mut p = Parser { text, bytes, pos: 0, depth: 0 };
    let value = p.value()?;
    p.skip_ws();
    if p.pos < bytes.len() {
        return Err(p.error("trailing characters"));
    }
    Ok(value)
}

/// Also the cursor of `helpers::scrub_bytes`, which reads an event the same way without building
/// values.
pub(crate) struct Parser<'a> {
    pub(crate) text: &'a str,
    pub(crate) bytes: &'a [u8],
    pub(crate) pos: usize,
    depth: usize,
}

/// A string's content: borrowed from the input when it has no escapes (the usual case).
pub(crate) enum Text<'a> {
    Borrowed(&'a str),
    Owned(String),
}

impl Text<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Text::Borrowed(s) => s,
            Text::Owned(s) => s,
        }
    }
}

impl<'a> Parser<'a> {
    /// At the start of `text` (already checked to be UTF-8).
    pub(crate) fn new(text: &'a str) -> Parser<'a> {
        Parser { text, bytes: text.as_bytes(), pos: 0, depth: 0 }
    }

    fn error(&self, what: &str) -> String {
        let before = &self.bytes[..self.pos.min(self.bytes.len())];
        let line = before.iter().filter(|b| **b == b'\n').count() + 1;
        let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
        format!("{what} at line {line} column {column}")
    }

    pub(crate) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(crate) fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    fn value(&mut self) -> Result<Dynamic, String> {
        self.skip_ws();
        match self.peek() {
            Some(b'"') => Ok(match self.string()? {
                Text::Borrowed(s) => ImmutableString::from(s).into(),
                Text::Owned(s) => ImmutableString::from(s).into(),
            }),
            Some(b'{') => self.nested(Parser::object),
            Some(b'[') => self.nested(Parser::array),
            Some(b't') => self.literal("true", Dynamic::TRUE),
            Some(b'f') => self.literal("false", Dynamic::FALSE),
            Some(b'n') => self.literal("null", Dynamic::UNIT),
            Some(b'-' | b'0'..=b'9') => self.number(),
            None => Err(self.error("EOF while parsing a value")),
            Some(_) => Err(self.error("expected value")),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> Result<Dynamic, String>) -> Result<Dynamic, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.pos += 1;
        let value = f(self);
        self.depth -= 1;
        value
    }

    pub(crate) fn literal(&mut self, word: &str, value: Dynamic) -> Result<Dynamic, String> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected value"))
        }
    }

    /// After `{`.
    fn object(&mut self) -> Result<Dynamic, String> {
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Dynamic::from_map(Map::new()));
        }
        let mut entries = Vec::with_capacity(16);
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.error("key must be a string"));
            }
            let key = self.string()?;
            self.expect(b':', "expected `:`")?;
            let value = self.value()?;
            entries.push((key.as_str().into(), value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    // Sorting once and building the tree in bulk is cheaper than one search per
                    // insert; a repeated key keeps its last value (stable sort), as with serde.
                    return Ok(Dynamic::from_map(Map::from_iter(entries)));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// After `[`.
    fn array(&mut self) -> Result<Dynamic, String> {
        let mut arr = Array::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Dynamic::from_array(arr));
        }
        loop {
            arr.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Dynamic::from_array(arr));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// At the opening quote.
    pub(crate) fn string(&mut self) -> Result<Text<'a>, String> {
        self.pos += 1;
        let start = self.pos;
        let run = self.plain_run();
        if self.peek() == Some(b'"') {
            self.pos += 1;
            return Ok(Text::Borrowed(&self.text[start..run]));
        }
        let mut out = String::with_capacity(run - start + 16);
        out.push_str(&self.text[start..run]);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Text::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                None => return Err(self.error("EOF while parsing a string")),
                Some(_) => return Err(self.error("control character (\\u0000-\\u001F) found while parsing a string")),
            }
            let from = self.pos;
            let to = self.plain_run();
            out.push_str(&self.text[from..to]);
        }
    }

    /// Advances over characters that need no handling; returns the end of the run.
    fn plain_run(&mut self) -> usize {
        self.pos += special_byte(&self.bytes[self.pos..]);
        self.pos
    }

    /// After a backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), String> {
        let Some(c) = self.peek() else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => return Err(self.error("invalid escape")),
        };
        out.push(ch);
        Ok(())
    }

    /// After `\u`: one code point, joining a surrogate pair; a lone surrogate is an error.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes[self.pos..].starts_with(b"\\u") {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error("lone trailing surrogate in hex escape")),
            other => other,
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or_else(|| self.error("EOF while parsing a string"))?;
        let mut n = 0;
        for &d in digits {
            let v = (d as char).to_digit(16).ok_or_else(|| self.error("invalid escape"))?;
            n = n * 16 + v;
        }
        self.pos += 4;
        Ok(n)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`: an integer when it has neither fraction
    /// nor exponent and fits `i64`, else a float (as rhai's serde support mapped numbers).
    pub(crate) fn number(&mut self) -> Result<Dynamic, String> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("invalid number")),
        }
        if self.bytes[int_start] == b'0' && self.peek().is_some_and(|b| b.is_ascii_digit()) {
            return Err(self.error("invalid number"));
        }
        let int_end = self.pos;
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("invalid number"));
            }
            self.digits();
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(self.error("invalid number"));
            }
            self.digits();
            is_float = true;
        }
        if !is_float {
            if let Some(n) = integer(&self.bytes[int_start..int_end], negative) {
                return Ok(Dynamic::from_int(n));
            }
        }
        let f: FLOAT = self.text[start..self.pos].parse().map_err(|_| self.error("invalid number"))?;
        if f.is_infinite() {
            return Err(self.error("number out of range"));
        }
        Ok(Dynamic::from_float(f))
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

/// The digits as an `i64`, or `None` when out of range (then the number is a float).
fn integer(digits: &[u8], negative: bool) -> Option<INT> {
    let mut n: u64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // `-0` has no integer form: serde_json (and so the previous path) made it the float -0.0.
        if n == 0 {
            return None;
        }
        0i64.checked_sub_unsigned(n)
    } else {
        INT::try_from(n).ok()
    }
}

fn write_value(out: &mut Vec<u8>, value: &Dynamic) {
    if let Ok(s) = value.as_immutable_string_ref() {
        write_str(out, &s);
    } else if value.is_map() {
        match value.as_map_ref() {
            Ok(map) => write_map(out, &map),
            Err(_) => write_fallback(out, value),
        }
    } else if let Ok(n) = value.as_int() {
        write_int(out, n);
    } else if let Ok(b) = value.as_bool() {
        out.extend_from_slice(if b { b"true" } else { b"false" });
    } else if value.is_unit() {
        out.extend_from_slice(b"null");
    } else if value.is_array() {
        match value.as_array_ref() {
            Ok(arr) => {
                out.push(b'[');
                for (i, item) in arr.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_value(out, item);
                }
                out.push(b']');
            }
            Err(_) => write_fallback(out, value),
        }
    } else {
        // Floats (formatted by serde_json's shortest round-trip printer, null when not finite),
        // chars, blobs, function pointers and custom types: as rhai's serde support writes them.
        write_fallback(out, value);
    }
}

fn write_map(out: &mut Vec<u8>, map: &Map) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_value(out, v);
    }
    out.push(b'}');
}

fn write_fallback(out: &mut Vec<u8>, value: &Dynamic) {
    serde_json::to_writer(&mut *out, value).expect("a Rhai value always serialises to JSON");
}

fn write_int(out: &mut Vec<u8>, n: INT) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut m = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// What follows the backslash for bytes that must be escaped (0 = copy as is), as serde_json:
/// quotes, backslashes and control characters; everything else, non-ASCII included, is copied.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        table[i] = b'u';
        i += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = start + special_byte(&bytes[start..]);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&b) = bytes.get(i) else { break };
        let esc = ESCAPE[b as usize];
        if esc == b'u' {
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 0xf) as usize]]);
        } else {
            out.extend_from_slice(&[b'\\', esc]);
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// Index of the first byte that is a quote, a backslash or a control character (the bytes both
/// the parser and the writer must stop at), or `bytes.len()`. Eight bytes at a time: strings
/// are most of an event, and a byte-by-byte loop was the parser's and writer's top cost.
fn special_byte(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // High bit set in a byte's lane when that byte is < 0x20, or equals '"' or '\\' (the
        // classic "has zero byte" test on w, w ^ '"'*8, w ^ '\\'*8). A lane can only be a false
        // positive through a borrow from a true hit below it, so the lowest lane set (the
        // first byte, little-endian) is always a real hit.
        let below_space = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let hits = (below_space | (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGH;
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - i)
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
