//! The top-level members of an event, for the Parquet encoder: each key, and its value's JSON
//! text as written.
//!
//! Hand-written rather than serde_json's borrowed `RawValue` map: to hand out a value's text,
//! serde_json checks every byte of every nested value (strings character by character, numbers,
//! escapes), and that was 15% of the router's CPU draining into S3 Parquet (BENCHMARKS.md, issue
//! 16). The events that reach an encoder were checked when the collector accepted them, and what a
//! transformation returned was written by Sluice's own writer; so this only finds where each
//! value ends (strings with memchr, containers by their brackets) and checks the object's own
//! structure. Keys and string values that are read (the string and timestamp columns) still go
//! through serde_json.

use std::borrow::Cow;

/// A member: its key (unescaped) and its value's JSON text.
pub type Member<'a> = (Cow<'a, str>, &'a str);

/// The members of the JSON object `json`, in order; an error for anything that is not one
/// JSON object.
pub fn members(json: &[u8]) -> Result<Vec<Member<'_>>, String> {
    let text = std::str::from_utf8(json).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return Err("expected a JSON object".into());
    }
    let mut out = Vec::with_capacity(24);
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            i = skip_ws(b, i);
            if b.get(i) != Some(&b'"') {
                return Err(format!("expected a key at byte {i}"));
            }
            let end = string_end(b, i)?;
            let key = key_text(&text[i..end])?;
            i = skip_ws(b, end);
            if b.get(i) != Some(&b':') {
                return Err(format!("expected `:` at byte {i}"));
            }
            i = skip_ws(b, i + 1);
            let start = i;
            i = value_end(b, i)?;
            out.push((key, &text[start..i]));
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(format!("expected `,` or `}}` at byte {i}")),
            }
        }
    }
    if skip_ws(b, i) != b.len() {
        return Err(format!("trailing characters at byte {i}"));
    }
    Ok(out)
}

fn key_text(quoted: &str) -> Result<Cow<'_, str>, String> {
    let inner = &quoted[1..quoted.len() - 1];
    if inner.contains('\\') {
        serde_json::from_str::<String>(quoted).map(Cow::Owned).map_err(|e| e.to_string())
    } else {
        Ok(Cow::Borrowed(inner))
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        i += 1;
    }
    i
}

/// With `b[start]` an opening quote: the index after the closing one.
fn string_end(b: &[u8], start: usize) -> Result<usize, String> {
    let mut i = start + 1;
    loop {
        let found = memchr::memchr2(b'"', b'\\', b.get(i..).unwrap_or_default())
            .ok_or_else(|| format!("unterminated string from byte {start}"))?;
        i += found;
        if b[i] == b'"' {
            return Ok(i + 1);
        }
        i += 2; // the backslash and the character it escapes
    }
}

/// The index after the value starting at `start`.
fn value_end(b: &[u8], start: usize) -> Result<usize, String> {
    match b.get(start) {
        Some(b'"') => string_end(b, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match b.get(i) {
                    Some(b'"') => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    Some(_) => {}
                    None => return Err(format!("unterminated value from byte {start}")),
                }
                i += 1;
            }
        }
        _ => {
            // A number or a literal.
            let len = b[start.min(b.len())..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
                .count();
            if len == 0 {
                return Err(format!("expected a value at byte {start}"));
            }
            Ok(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::collections::BTreeMap;

    /// What serde_json reads: keys and raw value texts.
    fn by_serde(json: &str) -> Vec<(String, String)> {
        let map: BTreeMap<String, &RawValue> = serde_json::from_str(json).unwrap();
        map.into_iter().map(|(k, v)| (k, v.get().to_string())).collect()
    }

    fn by_split(json: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = members(json.as_bytes()).unwrap().into_iter().map(|(k, v)| (k.into_owned(), v.to_string())).collect();
        out.sort();
        out
    }

    #[test]
    fn members_are_split_as_serde_json_reads_them() {
        for json in [
            r#"{}"#,
            r#" { } "#,
            r#"{"a":1,"b":-2.5e+3,"c":true,"d":null,"e":"x"}"#,
            r#"{ "type" : "track" ,
                 "properties" : { "text" : "a \"quoted\" } ] { [ string", "list": [1, [2, {"x": "]"}]] },
                 "k\u00e9y\n" : "caf\u00e9 \\ \/",
                 "context": {"traits": {}}, "e": [] }"#,
            "{\"emoji\":\"\u{1F600}\",\"back\\\\slash\\\\\":\"\\\\\"}",
        ] {
            assert_eq!(by_split(json), by_serde(json), "{json}");
        }
    }

    #[test]
    fn anything_but_one_object_is_an_error() {
        for bad in [&b"[1]"[..], b"", b"  ", b"{", b"{\"a\"}", b"{\"a\":}", b"{\"a\":1,}", b"{\"a\":1} x", b"{\"a\":\"x}", b"{\"a\":[1}", b"\"s\"", b"{1:2}", b"\xff"] {
            assert!(members(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
