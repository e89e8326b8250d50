//! Finding where a JSON value ends without checking it, and the one check its callers still
//! make of a whole event first: that it is UTF-8 ([`utf8`]).
//!
//! For bytes that were checked before: stored events (the collector parsed every one) and what
//! Sluice wrote itself. Both the scrub's byte path (the names pre-pass) and the Parquet encoder
//! (the top-level members) only need the extent of values they pass over, and checking every
//! byte again was a measurable part of a drain's CPU (BENCHMARKS.md, issue 16). `#[inline]`
//! because both callers live in other crates and call these once per value.

/// `bytes` as text, checked with simdutf8: the scrub's byte path, the general parser and the
/// Parquet encoder each check a whole event before slicing strings out of it, and std's check
/// was 4-5% of a drain's CPU (BENCHMARKS.md, issue 16). The error names the first bad byte, as
/// std's does (found again with std, on the failing path only).
#[inline]
pub fn utf8(bytes: &[u8]) -> Result<&str, String> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| match std::str::from_utf8(bytes) {
        Err(e) => format!("invalid UTF-8: {e}"),
        Ok(_) => "invalid UTF-8".to_string(),
    })
}

/// With `bytes[start]` an opening quote: the index after the closing one (backslash escapes
/// skipped, found with memchr). `None` when the input ends first.
#[inline]
pub fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        i += memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some(i + 1);
        }
        i += 2; // the backslash and the character it escapes
    }
}

/// The index after the JSON value starting at `start`: a string ends at its closing quote, an
/// object or array at the bracket that balances its opening one (brackets inside strings do not
/// count), a number or literal at the first byte that cannot belong to one. `None` when no value
/// starts there or the input ends first.
#[inline]
pub fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match *bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            loop {
                match *bytes.get(i)? {
                    b'"' => {
                        i = string_end(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
                .count();
            (len > 0).then_some(start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_end_where_json_says() {
        let cases: [(&str, usize); 8] = [
            (r#""a\"b" x"#, 6),
            (r#""\\" x"#, 4),
            (r#"{"k": "}]", "l": [1, {"m": "["}]} x"#, 33),
            ("[[], {}] x", 8),
            ("-1.5e+3, x", 7),
            ("true}", 4),
            ("null]", 4),
            (r#"{"a":"\u00e9"}"#, 14),
        ];
        for (json, end) in cases {
            assert_eq!(value_end(json.as_bytes(), 0), Some(end), "{json}");
        }
        for cut in [r#""abc"#, r#"{"a": [1, 2}"#, "", ",", r#""a\"#] {
            assert_eq!(value_end(cut.as_bytes(), 0), None, "{cut}");
        }
    }

    #[test]
    fn utf8_accepts_what_std_accepts_and_reports_where_it_is_not() {
        for ok in ["", "plain", "caf\u{e9} \u{1F600} \u{4e2d}\u{6587}", &"x".repeat(1000)] {
            assert_eq!(utf8(ok.as_bytes()), Ok(ok));
        }
        let mut bad = "a long enough prefix to leave the vector loop: ".repeat(3).into_bytes();
        bad.extend_from_slice(&[0xC3, b'(']);
        let error = utf8(&bad).unwrap_err();
        assert!(error.starts_with("invalid UTF-8: ") && error.contains(&format!("index {}", bad.len() - 2)), "{error}");
        assert!(utf8(&[0xF0, 0x9F, 0x98]).is_err(), "a truncated sequence");
        assert!(utf8(&[0xED, 0xA0, 0x80]).is_err(), "a surrogate");
    }
}
