//! Person names for `scrub_pii`: which keys hold one, and redacting the names an event carries
//! where they reappear in its free text.
//!
//! The rule, in one place (docs/transforms.md states it for users): after normalising a key
//! (ASCII lowercase, `_`, `-`, `.` and spaces removed), it holds a person's name when it is
//! `name`, `username` or `nickname`, or it is a person-role word directly followed by `name`
//! (`author_name`, `senderName`, `first-name`...). Any other `*_name` (`channel_name`,
//! `team_name`, `event_name`, `page_name`) names a thing, not a person.

use rhai::{Dynamic, ImmutableString, Map};

/// Words that make `<word>name` a person's name.
pub const PERSON_ROLES: [&str; 24] = [
    "author", "sender", "user", "display", "full", "first", "last", "nick", "real", "recipient", "owner",
    "creator", "given", "family", "middle", "maiden", "member", "assignee", "reporter", "customer",
    "contact", "person", "participant", "guest",
];

/// What a name found in free text becomes.
pub const NAME_REPLACEMENT: &str = "[name]";

/// Names shorter than this (in characters) are not searched for in text: initials and two-letter
/// names ("J", "Al", "Li") are also ordinary words and tokens, and redacting them would blank
/// out unrelated text, while a two-letter fragment identifies nobody on its own.
pub const MIN_NAME_CHARS: usize = 3;

const KEY_BUFFER: usize = 48;

fn normalize(key: &str, buf: &mut [u8; KEY_BUFFER]) -> Option<usize> {
    let mut len = 0;
    for b in key.bytes() {
        if matches!(b, b'_' | b'-' | b'.' | b' ') {
            continue;
        }
        if len == KEY_BUFFER {
            return None;
        }
        buf[len] = b.to_ascii_lowercase();
        len += 1;
    }
    Some(len)
}

/// Whether `key` holds a person's name (the rule at the top of this module).
pub fn is_person_name_key(key: &str) -> bool {
    let mut buf = [0u8; KEY_BUFFER];
    let Some(len) = normalize(key, &mut buf) else { return false };
    is_person_name_normalized(&buf[..len])
}

/// The same rule for a key already normalised (`walk::normalize_into`).
pub fn is_person_name_normalized(key: &[u8]) -> bool {
    let Some(role) = key.strip_suffix(b"name") else { return false };
    role.is_empty() || PERSON_ROLES.iter().any(|r| r.as_bytes() == role)
}

/// The names an event carries about its person: string values of person-name keys directly in
/// `traits` and `context.traits`, whole and word by word (a message says "Bob", not
/// "Bob Jones"), each at least [`MIN_NAME_CHARS`] long.
pub fn carried_names(event: &Map) -> Vec<ImmutableString> {
    let mut names: Vec<ImmutableString> = Vec::new();
    if let Some(traits) = event.get("traits") {
        collect(traits, &mut names);
    }
    if let Some(context) = event.get("context").and_then(|c| c.read_lock::<Map>()) {
        if let Some(traits) = context.get("traits") {
            collect(traits, &mut names);
        }
    }
    sort_carried(&mut names);
    names
}

/// Longest first, so "Bob Jones" is replaced whole before "Bob" would split it; among names of
/// one length, by text ignoring ASCII case, so the order does not depend on the order of the
/// keys the names came from (the byte path reads them in the event's order, a map in key order).
pub fn sort_carried(names: &mut [ImmutableString]) {
    names.sort_by(|a, b| {
        b.len().cmp(&a.len()).then_with(|| {
            a.bytes().map(|c| c.to_ascii_lowercase()).cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
        })
    });
}

/// Adds the name `value` carries (whole, trimmed, and word by word) to `names`, skipping those
/// shorter than [`MIN_NAME_CHARS`] and those already there (ignoring ASCII case).
pub fn add_carried(names: &mut Vec<ImmutableString>, value: &str) {
    let whole = value.trim();
    let mut add = |n: &str| {
        if n.chars().count() >= MIN_NAME_CHARS && !names.iter().any(|have| have.eq_ignore_ascii_case(n)) {
            names.push(n.into());
        }
    };
    add(whole);
    whole.split_whitespace().for_each(&mut add);
}

fn collect(traits: &Dynamic, names: &mut Vec<ImmutableString>) {
    let Some(traits) = traits.read_lock::<Map>() else { return };
    for (k, v) in traits.iter() {
        if !is_person_name_key(k) {
            continue;
        }
        let Ok(value) = v.as_immutable_string_ref() else { continue };
        add_carried(names, &value);
    }
}

/// Replaces whole-word, ASCII-case-insensitive occurrences of `names` in `text`.
pub fn redact_names(text: &str, names: &[ImmutableString]) -> Option<String> {
    let mut out: Option<String> = None;
    for name in names {
        let current = out.as_deref().unwrap_or(text);
        if let Some(replaced) = replace_word(current, name) {
            out = Some(replaced);
        }
    }
    out
}

fn replace_word(text: &str, word: &str) -> Option<String> {
    let (hay, needle) = (text.as_bytes(), word.as_bytes());
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let mut out = String::new();
    let (mut copied, mut i) = (0, 0);
    // Candidates are found by their first byte (either case) with memchr: most strings hold no
    // name at all, and comparing at every position was a tenth of the byte path's time.
    let (lower, upper) = (needle[0].to_ascii_lowercase(), needle[0].to_ascii_uppercase());
    let last = hay.len() - needle.len();
    while i <= last {
        match memchr::memchr2(lower, upper, &hay[i..=last]) {
            Some(at) => i += at,
            None => break,
        }
        if hay[i..i + needle.len()].eq_ignore_ascii_case(needle)
            && text.is_char_boundary(i)
            && text.is_char_boundary(i + needle.len())
            && !text[..i].chars().next_back().is_some_and(char::is_alphanumeric)
            && !text[i + needle.len()..].chars().next().is_some_and(char::is_alphanumeric)
        {
            out.push_str(&text[copied..i]);
            out.push_str(NAME_REPLACEMENT);
            i += needle.len();
            copied = i;
        } else {
            i += 1;
        }
    }
    (copied > 0).then(|| {
        out.push_str(&text[copied..]);
        out
    })
}

/// Redacts `names` in every string inside `value` (maps and arrays at any depth); returns how many
/// strings changed.
pub fn redact_names_in(value: &mut Dynamic, names: &[ImmutableString]) -> usize {
    if names.is_empty() {
        return 0;
    }
    if value.is_string() {
        let replaced = value.read_lock::<ImmutableString>().and_then(|s| redact_names(&s, names));
        return match replaced {
            Some(r) => {
                *value = r.into();
                1
            }
            None => 0,
        };
    }
    if let Ok(mut map) = value.as_map_mut() {
        return map.values_mut().map(|v| redact_names_in(v, names)).sum();
    }
    if let Ok(mut arr) = value.as_array_mut() {
        return arr.iter_mut().map(|v| redact_names_in(v, names)).sum();
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn person_name_keys_follow_one_rule() {
        for key in ["name", "Name", "author_name", "sender_name", "display_name", "displayName", "full_name", "fullName",
            "nickname", "nick_name", "username", "userName", "user-name", "first_name", "firstName", "last_name",
            "LastName", "real_name", "recipient_name", "owner_name", "creator_name"]
        {
            assert!(is_person_name_key(key), "{key}");
        }
        for key in ["channel_name", "team_name", "event_name", "page name", "pageName", "file_name", "hostname",
            "names", "rename", "name_id", "display", "email", "channel_display_name_x"]
        {
            assert!(!is_person_name_key(key), "{key}");
        }
    }

    #[test]
    fn names_are_replaced_as_whole_words_ignoring_case() {
        let names: Vec<ImmutableString> = vec!["Bob Jones".into(), "Jones".into(), "Bob".into()];
        assert_eq!(
            redact_names("bob, meet BOB JONES; Bobby and jonesy stay, Jones.", &names).as_deref(),
            Some("[name], meet [name]; Bobby and jonesy stay, [name].")
        );
        assert_eq!(redact_names("nothing here", &names), None);
        assert_eq!(redact_names("café Bob", &names).as_deref(), Some("café [name]"));
        assert_eq!(redact_names("éBob", &names), None, "a letter before the name is part of another word");
    }
}
