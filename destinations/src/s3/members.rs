//! The top-level members of an event, for the Parquet encoder: each key, and its value's JSON
//! text as written.
//!
//! Hand-written rather than serde_json's borrowed `RawValue` map: to hand out a value's text,
//! serde_json checks every byte of every nested value (strings character by character, numbers,
//! escapes), and that was 15% of the router's CPU draining into S3 Parquet (BENCHMARKS.md, issue
//! 16). The events that reach an encoder were checked when the collector accepted them, and what a
//! transformation returned was written by Sluice's own writer; so this only finds where each
//! value ends (`sluice_eventlog::skim`: strings with memchr, containers by their brackets) and checks the object's own
//! structure. Keys and string values that are read (the string and timestamp columns) still go
//! through serde_json.

use std::borrow::Cow;

use sluice_eventlog::skim;

/// A member: its key (unescaped) and its value's JSON text.
pub type Member<'a> = (Cow<'a, str>, &'a str);

/// The members of the JSON object `json`, in order; an error for anything that is not one
/// JSON object.
pub fn members(json: &[u8]) -> Result<Vec<Member<'_>>, String> {
    let text = skim::utf8(json)?;
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

fn string_end(b: &[u8], start: usize) -> Result<usize, String> {
    skim::string_end(b, start).ok_or_else(|| format!("unterminated string from byte {start}"))
}

fn value_end(b: &[u8], start: usize) -> Result<usize, String> {
    skim::value_end(b, start).ok_or_else(|| format!("expected a whole value at byte {start}"))
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
