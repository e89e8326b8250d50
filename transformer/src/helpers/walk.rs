//! Helpers that change an event in place, at any depth.
//!
//! Why in Rust: in Rhai, `let p = event.properties` copies the whole map, and a script that walks
//! the event itself pays that copy at every level plus interpreter overhead. These walkers take
//! the map by reference (Rhai passes a variable's value by reference to a native function's
//! first argument) and touch only what they change.

use rhai::{Array, Dynamic, ImmutableString, Map};

use super::text;

/// Key names to match. Matching ignores case and `_`, `-`, `.` and spaces, so `["first_name"]`
/// matches `firstName`, `FirstName` and `first-name`: personal data arrives under all of these
/// spellings from different SDKs.
///
/// This runs for every key of every event against every name, so the names are normalised once
/// (ASCII-lowercased, separators removed) into one buffer, and a key is normalised once into a
/// stack buffer and then compared with each name as a plain byte slice (mostly a length check).
#[derive(Clone, Debug, Default)]
pub struct Names {
    /// All normalised names, one after the other.
    normalized: Vec<u8>,
    /// `ends[i]` is where name `i` stops in `normalized`.
    ends: Vec<usize>,
}

/// Keys longer than this (after normalisation) are compared without the stack buffer.
pub const KEY_BUFFER: usize = 64;

impl Names {
    /// From a Rhai string or array of strings.
    pub fn from_dynamic(names: &Dynamic) -> Result<Names, String> {
        let mut out = Names::default();
        if let Ok(s) = names.as_immutable_string_ref() {
            out.push(&s);
        } else if let Ok(items) = names.as_array_ref() {
            out.ends.reserve(items.len());
            for item in items.iter() {
                let s = item.as_immutable_string_ref().map_err(|t| {
                    format!("key names must be strings, found a value of type {t}")
                })?;
                out.push(&s);
            }
        } else {
            return Err(format!(
                "key names must be a string or an array of strings, not {}",
                names.type_name()
            ));
        }
        Ok(out)
    }

    /// From Rust string literals (the built-in defaults of `scrub_pii`).
    pub fn from_strs(names: &[&str]) -> Names {
        let mut out = Names::default();
        names.iter().for_each(|n| out.push(n));
        out
    }

    fn push(&mut self, name: &str) {
        self.normalized.extend(normalized(name));
        self.ends.push(self.normalized.len());
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(a, &b)| &self.normalized[a..b])
    }

    pub fn matches(&self, key: &str) -> bool {
        if self.ends.is_empty() {
            return false;
        }
        let mut buf = [0u8; KEY_BUFFER];
        let mut len = 0;
        for b in normalized(key) {
            if len == KEY_BUFFER {
                // Rare: a very long key. Compare streaming instead.
                return self.iter().any(|name| normalized(key).eq(name.iter().copied()));
            }
            buf[len] = b;
            len += 1;
        }
        let key = &buf[..len];
        self.iter().any(|name| name == key)
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// [`Names::matches`] for a key already normalised with [`normalize_into`], so that one
    /// normalisation serves several rules.
    pub fn matches_normalized(&self, key: &[u8]) -> bool {
        self.iter().any(|name| name == key)
    }
}

/// Normalises `key` as names are compared (separators dropped, ASCII lowercased) into `buf`;
/// `None` when it does not fit.
pub fn normalize_into(key: &str, buf: &mut [u8; KEY_BUFFER]) -> Option<usize> {
    let mut len = 0;
    for b in normalized(key) {
        *buf.get_mut(len)? = b;
        len += 1;
    }
    Some(len)
}

fn is_separator(b: &u8) -> bool {
    matches!(b, b'_' | b'-' | b'.' | b' ')
}

/// The bytes a name is compared by: separators dropped, ASCII letters lowercased (non-ASCII
/// bytes compare exactly, as before).
fn normalized(name: &str) -> impl Iterator<Item = u8> + '_ {
    name.bytes()
        .filter(|b| !is_separator(b))
        .map(|b| b.to_ascii_lowercase())
}

/// What a deep helper was called on: an event (map) or an array of values. Rhai gives native
/// functions a `&mut Map` or `&mut Array`, never a `&mut Dynamic`, for the first argument.
pub enum Target<'a> {
    Map(&'a mut Map),
    Array(&'a mut Array),
}

impl Target<'_> {
    /// Calls `f` on every map inside the target (including the target itself).
    fn for_each_map(self, f: &mut dyn FnMut(&mut Map)) {
        match self {
            Target::Map(map) => for_each_map_in(map, f),
            Target::Array(arr) => arr.iter_mut().for_each(|v| for_each_map(v, f)),
        }
    }
}

fn for_each_map(value: &mut Dynamic, f: &mut dyn FnMut(&mut Map)) {
    if value.is_map() {
        if let Ok(mut map) = value.as_map_mut() {
            for_each_map_in(&mut map, f);
        }
    } else if value.is_array() {
        if let Ok(mut arr) = value.as_array_mut() {
            arr.iter_mut().for_each(|v| for_each_map(v, f));
        }
    }
}

fn for_each_map_in(map: &mut Map, f: &mut dyn FnMut(&mut Map)) {
    f(map);
    for v in map.values_mut() {
        for_each_map(v, f);
    }
}

/// Removes every key matching `names` at any depth; returns how many were removed.
pub fn drop_keys(target: Target, names: &Names) -> usize {
    let mut removed = 0;
    if names.is_empty() {
        return 0;
    }
    target.for_each_map(&mut |map: &mut Map| {
        let before = map.len();
        map.retain(|k, _| !names.matches(k));
        removed += before - map.len();
    });
    removed
}

/// Replaces the value of every key matching `names` (at any depth) with `replacement`, leaving
/// `()` (JSON null) alone; returns how many values were replaced. A masked value is not descended
/// into: the whole value (an `address` object, say) is replaced, and the walk then looks at the
/// replacement (a string) rather than the old contents.
pub fn mask_keys(target: Target, names: &Names, replacement: &ImmutableString) -> usize {
    let mut count = 0;
    target.for_each_map(&mut |map: &mut Map| {
        for (k, v) in map.iter_mut() {
            if !v.is_unit() && names.matches(k) {
                *v = replacement.clone().into();
                count += 1;
            }
        }
    });
    count
}

/// Replaces the value of every key matching `names` with its hex SHA-256, or with its keyed
/// HMAC-SHA256 when `key` is given (stable pseudonyms that cannot be reversed by guessing).
/// Non-string values are hashed in their JSON form; `()` is left alone.
pub fn hash_keys(target: Target, names: &Names, key: Option<&str>) -> usize {
    let mut count = 0;
    target.for_each_map(&mut |map: &mut Map| {
        for (k, v) in map.iter_mut() {
            if v.is_unit() || !names.matches(k) {
                continue;
            }
            let text = match v.as_immutable_string_ref() {
                Ok(s) => s.to_string(),
                Err(_) => serde_json::to_string(&*v).unwrap_or_default(),
            };
            *v = text::pseudonym(&text, key).into();
            count += 1;
        }
    });
    count
}

/// Replaces the values of the named keys of `map` itself (not deeper) that are email addresses
/// with a pseudonym (HMAC-SHA256 with `key`, else SHA-256); other values stay. For identity
/// fields (`userId`), which must stay stable per user but must not be an address.
pub fn pseudonymize_emails(map: &mut Map, names: &Names, key: Option<&str>) -> usize {
    let mut count = 0;
    for (k, v) in map.iter_mut() {
        if !names.matches(k) {
            continue;
        }
        let hashed = match v.as_immutable_string_ref() {
            Ok(s) if text::is_email(&s) => text::pseudonym(&s, key),
            _ => continue,
        };
        *v = hashed.into();
        count += 1;
    }
    count
}

/// Redacts email addresses inside every string value at any depth (map values and array
/// elements; keys are left alone). Returns how many strings changed.
pub fn redact_emails_in(value: &mut Dynamic, replacement: &str) -> usize {
    if value.is_map() {
        if let Ok(mut map) = value.as_map_mut() {
            return map.values_mut().map(|v| redact_emails_in(v, replacement)).sum();
        }
    } else if value.is_array() {
        if let Ok(mut arr) = value.as_array_mut() {
            return arr.iter_mut().map(|v| redact_emails_in(v, replacement)).sum();
        }
    }
    let new = match value.as_immutable_string_ref() {
        Ok(s) => text::redact_emails_opt(&s, replacement),
        Err(_) => None,
    };
    match new {
        Some(s) => {
            *value = s.into();
            1
        }
        None => 0,
    }
}

/// `{"a": {"b": 1}, "c": [1]}` -> `{"a_b": 1, "c": [1]}` with `separator` "_". Arrays are kept
/// as values: warehouses store them as JSON/VARIANT columns.
pub fn flatten(map: &Map, separator: &str) -> Map {
    let mut out = Map::new();
    flatten_into(&mut out, "", map, separator);
    out
}

fn flatten_into(out: &mut Map, prefix: &str, map: &Map, separator: &str) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}{separator}{k}")
        };
        match v.as_map_ref() {
            Ok(inner) if !inner.is_empty() => flatten_into(out, &key, &inner, separator),
            _ => {
                out.insert(key.into(), v.clone());
            }
        }
    }
}

/// The value at a dotted path (`"context.traits.email"`), or `()` when any step is missing.
pub fn get_path(map: &Map, path: &str) -> Dynamic {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return Dynamic::UNIT;
    };
    let Some(mut current) = map.get(first).cloned() else {
        return Dynamic::UNIT;
    };
    for part in parts {
        let next = match current.as_map_ref() {
            Ok(m) => m.get(part).cloned(),
            Err(_) => None,
        };
        match next {
            Some(v) => current = v,
            None => return Dynamic::UNIT,
        }
    }
    current
}

/// Sets the value at a dotted path, creating missing maps on the way. Fails when a step exists
/// but is not a map (overwriting it silently would lose data).
pub fn set_path(map: &mut Map, path: &str, value: Dynamic) -> Result<(), String> {
    let (parents, leaf) = match path.rsplit_once('.') {
        Some((parents, leaf)) => (Some(parents), leaf),
        None => (None, path),
    };
    let Some(parents) = parents else {
        map.insert(leaf.into(), value);
        return Ok(());
    };
    let (head, rest) = match parents.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (parents, None),
    };
    let child = map
        .entry(head.into())
        .or_insert_with(|| Dynamic::from_map(Map::new()));
    if child.is_unit() {
        *child = Dynamic::from_map(Map::new());
    }
    let mut child_map = child
        .as_map_mut()
        .map_err(|t| format!("set_path {path:?}: {head:?} holds a {t}, not a map"))?;
    let rest_path = match rest {
        Some(r) => format!("{r}.{leaf}"),
        None => leaf.to_string(),
    };
    set_path(&mut child_map, &rest_path, value)
}

/// Removes the value at a dotted path and returns it (`()` when missing).
pub fn remove_path(map: &mut Map, path: &str) -> Dynamic {
    match path.split_once('.') {
        None => map.remove(path).unwrap_or(Dynamic::UNIT),
        Some((head, rest)) => match map.get_mut(head).map(|v| v.as_map_mut()) {
            Some(Ok(mut inner)) => remove_path(&mut inner, rest),
            _ => Dynamic::UNIT,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_any_spelling() {
        let names = Names::from_dynamic(&Dynamic::from_array(vec!["first_name".into()])).unwrap();
        for key in ["first_name", "firstName", "FirstName", "first-name", "FIRST_NAME"] {
            assert!(names.matches(key), "{key}");
        }
        for key in ["first", "first_name2", "name", ""] {
            assert!(!names.matches(key), "{key}");
        }
        assert!(Names::from_dynamic(&Dynamic::from(3_i64)).is_err());
    }

    #[test]
    fn long_and_non_ascii_keys_match_too() {
        let long = "a_".repeat(70) + "Z";
        let names = Names::from_strs(&[&long, "prénom", "x"]);
        assert!(names.matches(&("A".repeat(70) + "z")), "longer than the key buffer");
        assert!(!names.matches(&"A".repeat(71)));
        assert!(!names.matches("PRÉNOM"), "non-ASCII letters compare exactly, as before");
        assert!(names.matches("Pré-nom"));
        assert!(!Names::default().matches(""));
        assert!(Names::from_strs(&["_"]).matches("-"), "names of only separators match the same");
    }
}
