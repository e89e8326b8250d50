//! Tests of the hand-written JSON <-> Dynamic conversion, mostly against the serde path it
//! replaced (`serde_json` + rhai's serde support), which is the reference for what is accepted
//! and what each value becomes.

use super::*;

/// The previous implementation: serde_json driving rhai's serde visitor.
fn reference_parse(bytes: &[u8]) -> Result<Dynamic, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn reference_write(value: &Dynamic) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Same shape, same types (an integer is not a float) and same values. Floats may differ by one
/// unit in the last place: serde_json without `float_roundtrip` is not correctly rounded (see
/// `floats_are_correctly_rounded`), ours is.
fn same(a: &Dynamic, b: &Dynamic) -> bool {
    if a.type_name() != b.type_name() {
        return false;
    }
    if let (Ok(x), Ok(y)) = (a.as_map_ref(), b.as_map_ref()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|((k1, v1), (k2, v2))| k1 == k2 && same(v1, v2));
    }
    if let (Ok(x), Ok(y)) = (a.as_array_ref(), b.as_array_ref()) {
        return x.len() == y.len() && x.iter().zip(y.iter()).all(|(v1, v2)| same(v1, v2));
    }
    if let (Ok(x), Ok(y)) = (a.as_float(), b.as_float()) {
        return x.to_bits().abs_diff(y.to_bits()) <= 1;
    }
    a.to_string() == b.to_string()
}

fn check_same_as_reference(input: &[u8]) {
    let ours = parse(input).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(input)));
    let theirs = reference_parse(input).unwrap();
    assert!(same(&ours, &theirs), "parse differs for {}", String::from_utf8_lossy(input));
    let mut written = Vec::new();
    write_value(&mut written, &ours);
    assert_eq!(
        String::from_utf8(written).unwrap(),
        String::from_utf8(reference_write(&ours)).unwrap(),
        "output differs for {}",
        String::from_utf8_lossy(input)
    );
}

#[test]
fn round_trips_an_event() {
    let input = br#"{"type":"track","n":1,"f":1.5,"ok":true,"none":null,"list":[1,"a"],
        "context":{"ip":"1.2.3.4","big":18446744073709551615}}"#;
    let value = event_from_json(input).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&event_to_json(&value)).unwrap();
    let expected = serde_json::json!({"type":"track","n":1,"f":1.5,"ok":true,"none":null,
        "list":[1,"a"],"context":{"ip":"1.2.3.4","big":18446744073709551615.0}});
    assert_eq!(out, expected);
}

#[test]
fn rejects_non_objects() {
    let err = event_from_json(b"[1,2]").unwrap_err();
    assert_eq!(err.to_string(), "event is not a JSON object: found a JSON array");
    assert!(event_from_json(b"{not json").is_err());
}

#[test]
fn accepts_and_maps_values_like_serde() {
    let cases: &[&str] = &[
        r#"{}"#,
        r#"[]"#,
        r#" { "a" : [ 1 , -2 , 3.5 , -0.0 , 1e2 , 1E-2 , 2.5e+3 ] , "b" : { } } "#,
        r#"{"z":1,"a":2,"m":{"y":null,"b":[true,false,null]}}"#,
        r#"{"dup":1,"dup":"last wins"}"#,
        r#"[0, -0, 9223372036854775807, -9223372036854775808, 9223372036854775808, -9223372036854775809]"#,
        r#"[18446744073709551615, 18446744073709551616, 123456789012345678901234567890]"#,
        r#"[0.1, 1.7976931348623157e308, 5e-324, 1e-400, 0.30000000000000004, 100.0, 1.0]"#,
        r#"["", "plain", "caf\u00e9", "\ud83d\ude00", "tab\there", "q\"b\\s\/", "\b\f\n\r\t", "\u0000\u001f\u007f"]"#,
        "[\"raw utf-8: é 😀 \u{7f}\"]",
        r#"{"key with \"quotes\" and \n":"v","é":"k"}"#,
        "\t\r\n {\"ws\" :\t1}\n",
        r#""just a string""#,
        "42",
        "true",
        "null",
    ];
    for case in cases {
        check_same_as_reference(case.as_bytes());
    }
}

#[test]
fn integers_stay_integers_and_others_are_floats() {
    let v = parse(br#"[1, 1.0, 1e0, -0, 0, 9223372036854775807, 9223372036854775808]"#).unwrap();
    let items = v.into_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|v| v.type_name()).collect();
    assert_eq!(kinds, ["i64", "f64", "f64", "f64", "i64", "i64", "f64"]);
    assert_eq!(items[3].as_float().unwrap().to_bits(), (-0.0f64).to_bits(), "-0 is a float, as with serde_json");
}

#[test]
fn floats_are_correctly_rounded() {
    // The shortest text of an f64 reads back as that f64; serde_json's default parser is one
    // unit in the last place off for this one.
    let text = "24944098.291591674";
    let exact: f64 = text.parse().unwrap();
    assert_eq!(parse(text.as_bytes()).unwrap().as_float().unwrap(), exact);
    assert_eq!(event_to_json(&Dynamic::from_float(exact)), text.as_bytes());
}

#[test]
fn rejects_what_serde_rejects() {
    let mut cases: Vec<Vec<u8>> = [
        "", " ", "{", "}", "[", "[1,]", "{\"a\":1,}", "{\"a\"}", "{\"a\":}", "{a:1}", "{'a':1}",
        "01", "-01", "1.", ".5", "-", "1e", "1e+", "+1", "0x10", "1.5e", "NaN", "Infinity",
        "1e400", "-1e400", "nul", "tru", "falsey", "{} x", "[] []", "\"abc", "\"\\x\"", "\"\\u12\"",
        "\"\\u12g4\"", "\"\\ud800\"", "\"\\ud800x\"", "\"\\ud800\\u0041\"", "\"\\udc00\"",
        "\"a\nb\"", "\"a\tb\"", "\"\u{1}\"", "[1 2]", "{\"a\":1 \"b\":2}", "{,}", "[,1]",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    cases.push(b"\"\xff\"".to_vec());
    cases.push(b"{\"a\xc3\":1}".to_vec());
    cases.push(b"\xef\xbb\xbf{}".to_vec());
    for case in &cases {
        let text = String::from_utf8_lossy(case);
        assert!(reference_parse(case).is_err(), "reference accepts {text:?}");
        assert!(parse(case).is_err(), "accepted {text:?}");
    }
}

#[test]
fn nesting_is_limited_to_what_the_log_promises() {
    // The collector refuses events deeper than MAX_EVENT_DEPTH, so this parser must take exactly
    // that much (and serde_json, which destinations use, more).
    let n = sluice_eventlog::MAX_EVENT_DEPTH;
    let ok = format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert!(parse(ok.as_bytes()).is_ok() && reference_parse(ok.as_bytes()).is_ok());
    let deep = format!("{}{}", "[".repeat(n + 1), "]".repeat(n + 1));
    assert!(parse(deep.as_bytes()).unwrap_err().contains("recursion limit"));
    let objects = format!("{}1{}", "{\"a\":".repeat(n + 1), "}".repeat(n + 1));
    assert!(parse(objects.as_bytes()).is_err());
    let objects = format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    assert!(parse(objects.as_bytes()).is_ok());
}

#[test]
fn errors_say_where() {
    let err = parse(b"{\n  \"a\": tru\n}").unwrap_err();
    assert_eq!(err, "expected value at line 2 column 8");
}

#[test]
fn writes_what_rhai_values_hold() {
    let mut map = Map::new();
    map.insert("nan".into(), Dynamic::from_float(f64::NAN));
    map.insert("inf".into(), Dynamic::from_float(f64::INFINITY));
    map.insert("float".into(), Dynamic::from_float(1e21));
    map.insert("char".into(), Dynamic::from_char('\n'));
    map.insert("blob".into(), Dynamic::from_blob(vec![1, 2]));
    map.insert("min".into(), Dynamic::from_int(i64::MIN));
    map.insert("shared".into(), Dynamic::from_map(Map::new()).into_shared());
    map.insert("text".into(), "ctl \u{1} \u{1f} del \u{7f} é \" \\".into());
    let value = Dynamic::from_map(map);
    assert_eq!(event_to_json(&value), reference_write(&value));
}

/// Small deterministic generator (no rand dependency in this crate).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &["a", "Z", " ", "\"", "\\", "/", "\n", "\u{0}", "\u{1f}", "é", "😀", "中", "@", "x.y", "\u{7f}", "\u{2028}"];
    (0..rng.below(8)).map(|_| PIECES[rng.below(PIECES.len() as u64) as usize]).collect()
}

fn random_value(rng: &mut Rng, depth: u32) -> serde_json::Value {
    use serde_json::Value;
    match rng.below(if depth > 4 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::from(rng.next() as i64 >> rng.below(64)),
        3 => Value::from((rng.next() >> 11) as f64 / (1u64 << rng.below(53)) as f64 * if rng.below(2) == 0 { -1.0 } else { 1.0 }),
        4 => Value::from(rng.next()),
        5 => Value::String(random_string(rng)),
        6 => Value::Array((0..rng.below(5)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => Value::Object((0..rng.below(6)).map(|_| (random_string(rng), random_value(rng, depth + 1))).collect()),
    }
}

#[test]
fn random_documents_parse_and_write_like_serde() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let doc = random_value(&mut rng, 0);
        let compact = serde_json::to_vec(&doc).unwrap();
        check_same_as_reference(&compact);
        let pretty = serde_json::to_vec_pretty(&doc).unwrap();
        check_same_as_reference(&pretty);
    }
}


#[test]
fn special_byte_finds_the_first_stop_byte_at_any_position() {
    let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).unwrap_or(b.len());
    for len in 0..40 {
        for pos in 0..=len {
            for stop in [b'"', b'\\', 0u8, 0x1f, b'\n'] {
                // Bytes around the stop set (0x20, '!', '#', '[', ']', 0x7f, 0x80+) must not stop.
                let mut bytes: Vec<u8> = (0..len).map(|i| [b' ', b'!', b'#', b'[', b']', 0x7f, 0xc3, 0xff][i % 8]).collect();
                if pos < len {
                    bytes[pos] = stop;
                }
                assert_eq!(special_byte(&bytes), naive(&bytes), "{bytes:?}");
                // A second stop just after the first, in the same 8-byte word or the next: the
                // first one found must still be the first in the bytes.
                for gap in 1..10 {
                    let mut two = bytes.clone();
                    if pos + gap < len {
                        two[pos + gap] = 0;
                        assert_eq!(special_byte(&two), naive(&two), "{two:?}");
                    }
                }
            }
        }
    }
}
