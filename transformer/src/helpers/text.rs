//! String helpers: regex with a per-thread pattern cache, email redaction, masking, hashing, IP
//! anonymisation and snake_case. Plain Rust functions so they are testable without Rhai; `mod.rs`
//! registers them with the engine.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;

use hmac::{Hmac, Mac};
use regex::Regex;
use sha2::{Digest, Sha256};

/// What `redact_emails` puts in place of an address when the script names no replacement.
pub const DEFAULT_EMAIL_REPLACEMENT: &str = "[email]";

/// Deliberately broad: redaction should err towards removing things that look like addresses.
/// Letters and digits are Unicode ones: addresses may have them in the local part and in the
/// domain (RFC 6531, IDN), and an ASCII-only pattern left `jö` of `jörg@bank.example.de` behind.
/// Combining marks (`\p{M}`) count too: text in decomposed form (NFD, as macOS keyboards and some
/// databases produce) writes `ö` as `o` + U+0308, and without marks the address was cut there.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[\p{L}\p{M}\p{N}._%+\-]+@[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}\-]*[\p{L}\p{M}\p{N}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{M}\p{N}\-]*[\p{L}\p{M}\p{N}])?)*\.\p{L}[\p{L}\p{M}]+")
        .expect("email pattern is valid")
});

/// Patterns compiled per thread: scripts pass patterns as string literals on every call, and
/// compiling a regex costs far more than the match. A thread-local map avoids a lock on the hot
/// path; the cap only guards against scripts that build patterns from event data.
const REGEX_CACHE_CAP: usize = 256;

thread_local! {
    static REGEX_CACHE: RefCell<HashMap<String, Regex>> = RefCell::new(HashMap::new());
}

/// Runs `f` with the compiled `pattern`, compiling it on first use in this thread.
pub fn with_regex<T>(pattern: &str, f: impl FnOnce(&Regex) -> T) -> Result<T, String> {
    REGEX_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(re) = cache.get(pattern) {
            return Ok(f(re));
        }
        let re = Regex::new(pattern).map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
        if cache.len() >= REGEX_CACHE_CAP {
            cache.clear();
        }
        let out = f(&re);
        cache.insert(pattern.to_string(), re);
        Ok(out)
    })
}

/// Replaces every match of `pattern` in `text`; `$1`/`${name}` in `replacement` refer to groups.
pub fn regex_replace(text: &str, pattern: &str, replacement: &str) -> Result<String, String> {
    with_regex(pattern, |re| re.replace_all(text, replacement).into_owned())
}

pub fn regex_match(text: &str, pattern: &str) -> Result<bool, String> {
    with_regex(pattern, |re| re.is_match(text))
}

/// `Some(new text)` when `text` contains an email address, `None` when it has none (the common
/// case, decided by a byte search for '@' before the regex runs).
pub fn redact_emails_opt(text: &str, replacement: &str) -> Option<String> {
    if !text.as_bytes().contains(&b'@') {
        return None;
    }
    match EMAIL.replace_all(text, replacement) {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(s) => Some(s),
    }
}

pub fn redact_emails(text: &str, replacement: &str) -> String {
    redact_emails_opt(text, replacement).unwrap_or_else(|| text.to_string())
}

pub fn is_email(text: &str) -> bool {
    text.as_bytes().contains(&b'@')
        && EMAIL
        .find(text.trim())
        .is_some_and(|m| m.start() == 0 && m.end() == text.trim().len())
}

/// Every character becomes `*`, except the last `keep_last` ones (e.g. the last digits of a phone
/// number). Counting characters, not bytes, keeps multi-byte text valid.
pub fn mask(text: &str, keep_last: usize) -> String {
    let total = text.chars().count();
    let hide = total.saturating_sub(keep_last);
    text.chars()
        .enumerate()
        .map(|(i, c)| if i < hide { '*' } else { c })
        .collect()
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// HMAC-SHA256 with `key` when given, else SHA-256: the pseudonym helpers' choice.
pub fn pseudonym(text: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => hmac_sha256_hex(text, key),
        None => sha256_hex(text),
    }
}

/// Keyed hash: the same input and key always give the same pseudonym, but without the key nobody
/// can confirm a guess (which a plain SHA-256 of an email allows).
pub fn hmac_sha256_hex(text: &str, key: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// IPv4: the last octet is zeroed (a /24). IPv6: only the first 48 bits are kept. A port is
/// dropped, a comma-separated list (X-Forwarded-For) is anonymised element by element, and
/// anything that is not an address becomes empty: leaking an unrecognised value is worse.
pub fn anonymize_ip(text: &str) -> String {
    text.split(',')
        .map(|part| anonymize_one_ip(part.trim()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(", ")
}

fn anonymize_one_ip(text: &str) -> Option<String> {
    let ip = match text.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => text.parse::<SocketAddr>().ok()?.ip(),
    };
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            Ipv4Addr::new(a, b, c, 0).to_string()
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
    })
}

/// "Post Created" -> "post_created", "firstName" -> "first_name", "HTTPStatus" -> "http_status".
/// The warehouse uses these names for tables and columns.
pub fn snake_case(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            if c.is_uppercase() {
                let prev = i.checked_sub(1).map(|j| chars[j]);
                let next = chars.get(i + 1).copied();
                let boundary = match prev {
                    Some(p) if p.is_lowercase() || p.is_ascii_digit() => true,
                    Some(p) if p.is_uppercase() => next.is_some_and(|n| n.is_lowercase()),
                    _ => false,
                };
                if boundary && !out.is_empty() && !out.ends_with('_') {
                    out.push('_');
                }
                out.extend(c.to_lowercase());
            } else {
                out.push(c);
            }
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_in_free_text() {
        let text = "ping alice.smith+chat@example.co.uk or Bob@Corp.IO, not @channel";
        assert_eq!(
            redact_emails(text, DEFAULT_EMAIL_REPLACEMENT),
            "ping [email] or [email], not @channel"
        );
        assert_eq!(redact_emails_opt("no at sign here", "x"), None);
        assert_eq!(redact_emails_opt("@here is not an email", "x"), None);
        assert!(is_email(" bob@example.com "));
        assert!(!is_email("bob@example.com and more"));
    }

    #[test]
    fn emails_with_letters_beyond_ascii() {
        assert_eq!(
            redact_emails("Grüße, mail jörg.müller@bank.example.de or info@bücher.de, ñoño@correo.es", "[email]"),
            "Grüße, mail [email] or [email], [email]"
        );
        assert_eq!(redact_emails("пользователь@пример.рф and 用户@例子.中国", "[email]"), "[email] and [email]");
        assert!(is_email("jörg@bank.example.de"));
        // Decomposed form: `o` followed by U+0308 COMBINING DIAERESIS, in both parts.
        let nfd = "mail jo\u{308}rg@bu\u{308}cher.de now";
        assert_eq!(redact_emails(nfd, "[email]"), "mail [email] now");
        assert!(is_email("jo\u{308}rg@bank.example.de"));
        assert_eq!(redact_emails_opt("ping @jörg about it", "x"), None, "a mention is not an address");
    }

    #[test]
    fn masks_by_character() {
        assert_eq!(mask("Zoë Bell", 0), "********");
        assert_eq!(mask("+33612345678", 4), "********5678");
        assert_eq!(mask("ab", 5), "ab");
    }

    #[test]
    fn hashes_are_known_values() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_sha256_hex("what do ya want for nothing?", "Jefe"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn anonymises_addresses() {
        assert_eq!(anonymize_ip("203.0.113.77"), "203.0.113.0");
        assert_eq!(anonymize_ip("203.0.113.77:4433"), "203.0.113.0");
        assert_eq!(anonymize_ip("2001:db8:85a3:8d3:1319:8a2e:370:7348"), "2001:db8:85a3::");
        assert_eq!(anonymize_ip("10.1.2.3, 198.51.100.9"), "10.1.2.0, 198.51.100.0");
        assert_eq!(anonymize_ip("not-an-ip"), "");
    }

    #[test]
    fn snake_cases_names() {
        assert_eq!(snake_case("Post Created"), "post_created");
        assert_eq!(snake_case("firstName"), "first_name");
        assert_eq!(snake_case("HTTPStatus"), "http_status");
        assert_eq!(snake_case("  user-ID 2 "), "user_id_2");
        assert_eq!(snake_case("already_snake"), "already_snake");
    }

    #[test]
    fn regex_errors_and_cache() {
        assert_eq!(regex_replace("a1b22", r"\d+", "#").unwrap(), "a#b#");
        assert_eq!(regex_replace("John Smith", r"(\w+) (\w+)", "$2").unwrap(), "Smith");
        assert!(regex_match("abc", "^a").unwrap());
        let err = regex_match("abc", "(").unwrap_err();
        assert!(err.contains("invalid regex"), "{err}");
    }
}
