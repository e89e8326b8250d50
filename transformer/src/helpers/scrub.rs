//! `scrub_pii(event, options)`: everything `transforms/scrub_pii.rhai` does, in one native walk.
//!
//! Why a dedicated helper: the script used to call six granular helpers, each dispatched by Rhai
//! on a property chain (`event.context.traits.mask_keys(...)`), each re-reading `meta.params`,
//! copying the field list as an argument and walking its part of the event again. Here options
//! are read once per call and the event is walked once, in place: identity fields at the top
//! level, field rules inside `traits`, `properties` and `context.traits`, email redaction in
//! every other string on the way.
//!
//! The semantics are exactly those of the granular version (kept in the docs and checked
//! against it in `tests/scrub_pii.rs`):
//!
//! 1. `userId` / `anonymousId` / `previousId` (top level; names matched like every other name)
//!    holding an email address become a pseudonym: HMAC-SHA256 with `hmac_key`, else SHA-256.
//! 2. Keys named in `fields` are masked, dropped or hashed (`mode`) at any depth inside
//!    `traits`, `properties` and `context.traits` (maps inside arrays too). `null` values are
//!    left alone by mask and hash; a matched object is replaced whole.
//! 3. With `redact_text_emails` (default), email addresses inside every remaining string value
//!    become `[email]`, including the mask replacement itself.
//!
//! With `person_names` (default), two rules join in (see `names.rs`, and docs/transforms.md):
//! keys that hold a person's name (`author_name`, `senderName`...) are treated like the keys in
//! `fields`, and the names the event carries in `traits` / `context.traits` become `[name]`
//! wherever they appear as words in the strings of `properties` and `traits`. With
//! `person_names: false` the output is exactly the granular script's.

use std::borrow::Cow;
use std::sync::LazyLock;

use rhai::{Dynamic, ImmutableString, Map};

use super::names;
use super::text;
use super::walk::{self, Names};
use super::DEFAULT_MASK_REPLACEMENT;

/// Personal-data key names scrubbed when `options.fields` is absent.
pub const DEFAULT_FIELDS: [&str; 10] = [
    "name",
    "first_name",
    "last_name",
    "full_name",
    "display_name",
    "nickname",
    "username",
    "email",
    "phone",
    "address",
];

/// Top-level identity keys that are pseudonymised when they hold an email address.
pub const IDENTITY_KEYS: [&str; 3] = ["userId", "anonymousId", "previousId"];

// Built once per process: the default call (`params: {}`) then allocates nothing for names.
static DEFAULT_NAMES: LazyLock<Names> = LazyLock::new(|| Names::from_strs(&DEFAULT_FIELDS));
pub(super) static IDENTITY_NAMES: LazyLock<Names> = LazyLock::new(|| Names::from_strs(&IDENTITY_KEYS));

/// What happens to the value of a key named in `fields`.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Replaced by this text (already email-redacted when redaction is on, as the granular
    /// version redacted the replacement after writing it).
    Mask(ImmutableString),
    Drop,
    Hash,
}

/// The parsed `options` map of one call.
#[derive(Debug, Clone)]
pub struct ScrubOptions {
    fields: Cow<'static, Names>,
    pub(super) mode: Mode,
    hmac_key: Option<ImmutableString>,
    pub(super) redact_text_emails: bool,
    pub(super) person_names: bool,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions {
            fields: Cow::Borrowed(&DEFAULT_NAMES),
            mode: Mode::Mask(DEFAULT_MASK_REPLACEMENT.into()),
            hmac_key: None,
            redact_text_emails: true,
            person_names: true,
        }
    }
}

/// A missing option and an explicit `()` (JSON null) both mean "use the default", like `??`.
fn option<'a>(options: &'a Map, name: &str) -> Option<&'a Dynamic> {
    options.get(name).filter(|v| !v.is_unit())
}

impl ScrubOptions {
    /// Reads `fields`, `mode`, `replacement`, `hmac_key` and `redact_text_emails`; other keys
    /// are ignored (a script's params may carry settings of its own). An unknown `mode` masks,
    /// as the script's `switch` did: the strictest choice when a typo slips through.
    pub fn from_map(options: &Map) -> Result<ScrubOptions, String> {
        let mut out = ScrubOptions::default();
        if let Some(fields) = option(options, "fields") {
            let names = Names::from_dynamic(fields).map_err(|e| format!("scrub_pii fields: {e}"))?;
            out.fields = Cow::Owned(names);
        }
        if let Some(key) = option(options, "hmac_key") {
            let key = key.as_immutable_string_ref().map_err(|t| {
                format!("scrub_pii hmac_key must be a string, not {t}")
            })?;
            out.hmac_key = Some(key.clone());
        }
        if let Some(on) = option(options, "redact_text_emails") {
            out.redact_text_emails = on.as_bool().map_err(|t| {
                format!("scrub_pii redact_text_emails must be true or false, not {t}")
            })?;
        }
        if let Some(on) = option(options, "person_names") {
            out.person_names = on.as_bool().map_err(|t| {
                format!("scrub_pii person_names must be true or false, not {t}")
            })?;
        }
        let mode = option(options, "mode").and_then(|m| m.as_immutable_string_ref().ok().map(|m| m.clone()));
        out.mode = match mode.as_ref().map(|m| m.as_str()) {
            Some("drop") => Mode::Drop,
            Some("hash") => Mode::Hash,
            // Like the script, `replacement` is only read (and checked) when masking.
            _ => {
                let replacement = match option(options, "replacement") {
                    None => ImmutableString::from(DEFAULT_MASK_REPLACEMENT),
                    Some(r) => r.as_immutable_string_ref().map_err(|t| {
                        format!("scrub_pii replacement must be a string, not {t}")
                    })?.clone(),
                };
                Mode::Mask(replacement)
            }
        };
        if out.redact_text_emails {
            if let Mode::Mask(r) = &out.mode {
                if let Some(redacted) = text::redact_emails_opt(r, text::DEFAULT_EMAIL_REPLACEMENT) {
                    out.mode = Mode::Mask(redacted.into());
                }
            }
        }
        Ok(out)
    }

    pub(super) fn key(&self) -> Option<&str> {
        self.hmac_key.as_ref().map(|k| k.as_str())
    }

    /// Whether the field rules apply to `key`.
    pub(super) fn is_field(&self, key: &str) -> bool {
        // One normalisation for both rules: this runs for every key of the parts with field
        // rules, and normalising twice was 6% of a drain's CPU.
        let mut buf = [0u8; walk::KEY_BUFFER];
        match walk::normalize_into(key, &mut buf) {
            Some(len) => {
                let key = &buf[..len];
                self.fields.matches_normalized(key) || self.person_names && names::is_person_name_normalized(key)
            }
            None => self.fields.matches(key) || self.person_names && names::is_person_name_key(key),
        }
    }
}

/// Scrubs `event` in place; returns the number of values changed (pseudonymised, masked,
/// dropped, hashed or email-redacted).
pub fn scrub_pii(event: &mut Map, opts: &ScrubOptions) -> usize {
    let mut changed = 0;
    // Read before the field rules mask them.
    let carried = if opts.person_names { names::carried_names(event) } else { Vec::new() };
    for (key, value) in event.iter_mut() {
        if IDENTITY_NAMES.matches(key) {
            let pseudonym = match value.as_immutable_string_ref() {
                Ok(s) if text::is_email(&s) => Some(text::pseudonym(&s, opts.key())),
                _ => None,
            };
            if let Some(p) = pseudonym {
                *value = p.into();
                changed += 1;
                continue;
            }
        }
        changed += match key.as_str() {
            "traits" | "properties" => fields_in(value, opts) + names::redact_names_in(value, &carried),
            "context" => context(value, opts),
            _ => redact(value, opts),
        };
    }
    changed
}

/// `context`: field rules apply to `context.traits` only; the rest (library, os, userAgent) is
/// technical and only has its strings redacted.
fn context(value: &mut Dynamic, opts: &ScrubOptions) -> usize {
    if !value.is_map() {
        return redact(value, opts);
    }
    let Ok(mut map) = value.as_map_mut() else {
        return 0;
    };
    map.iter_mut()
        .map(|(k, v)| if k == "traits" { fields_in(v, opts) } else { redact(v, opts) })
        .sum()
}

/// A part where the field rules apply, at any depth.
fn fields_in(value: &mut Dynamic, opts: &ScrubOptions) -> usize {
    if value.is_map() {
        if let Ok(mut map) = value.as_map_mut() {
            return fields_in_map(&mut map, opts);
        }
    } else if value.is_array() {
        if let Ok(mut arr) = value.as_array_mut() {
            return arr.iter_mut().map(|v| fields_in(v, opts)).sum();
        }
    }
    redact(value, opts)
}

fn fields_in_map(map: &mut Map, opts: &ScrubOptions) -> usize {
    let mut changed = 0;
    if let Mode::Drop = opts.mode {
        let before = map.len();
        map.retain(|k, _| !opts.is_field(k));
        changed += before - map.len();
    }
    for (k, v) in map.iter_mut() {
        // A matched value is replaced whole and not descended into (as the granular helpers).
        let hit = !v.is_unit() && !matches!(opts.mode, Mode::Drop) && opts.is_field(k);
        if !hit {
            changed += fields_in(v, opts);
            continue;
        }
        *v = match &opts.mode {
            Mode::Mask(replacement) => replacement.clone().into(),
            _ => {
                let text = match v.as_immutable_string_ref() {
                    Ok(s) => s.to_string(),
                    Err(_) => serde_json::to_string(&*v).unwrap_or_default(),
                };
                text::pseudonym(&text, opts.key()).into()
            }
        };
        changed += 1;
    }
    changed
}

fn redact(value: &mut Dynamic, opts: &ScrubOptions) -> usize {
    if !opts.redact_text_emails || value.is_unit() {
        return 0;
    }
    walk::redact_emails_in(value, text::DEFAULT_EMAIL_REPLACEMENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(json: serde_json::Value) -> Map {
        rhai::serde::to_dynamic(json).unwrap().cast::<Map>()
    }

    fn scrub(event: serde_json::Value, options: serde_json::Value) -> serde_json::Value {
        let mut event = map(event);
        let opts = ScrubOptions::from_map(&map(options)).unwrap();
        scrub_pii(&mut event, &opts);
        rhai::serde::from_dynamic(&Dynamic::from_map(event)).unwrap()
    }

    #[test]
    fn options_are_checked() {
        let err = |o| ScrubOptions::from_map(&map(o)).unwrap_err();
        assert!(err(serde_json::json!({"hmac_key": 5})).contains("hmac_key must be a string"));
        assert!(err(serde_json::json!({"fields": [1]})).contains("fields"));
        assert!(err(serde_json::json!({"redact_text_emails": "no"})).contains("true or false"));
        assert!(err(serde_json::json!({"replacement": 1})).contains("replacement"));
        // Only read when masking, as in the script.
        assert!(ScrubOptions::from_map(&map(serde_json::json!({"mode": "drop", "replacement": 1}))).is_ok());
        // Nulls mean defaults.
        assert!(ScrubOptions::from_map(&map(serde_json::json!({"fields": null, "mode": null}))).is_ok());
    }

    #[test]
    fn mask_replacement_is_redacted_like_any_string() {
        let out = scrub(
            serde_json::json!({"traits": {"email": "a@b.co"}}),
            serde_json::json!({"replacement": "ask dpo@corp.io"}),
        );
        assert_eq!(out["traits"]["email"], "ask [email]");
        let out = scrub(
            serde_json::json!({"traits": {"email": "a@b.co"}}),
            serde_json::json!({"replacement": "ask dpo@corp.io", "redact_text_emails": false}),
        );
        assert_eq!(out["traits"]["email"], "ask dpo@corp.io");
    }

    #[test]
    fn unknown_mode_masks() {
        let out = scrub(serde_json::json!({"traits": {"name": "Ann"}}), serde_json::json!({"mode": "hashh"}));
        assert_eq!(out["traits"]["name"], "[redacted]");
    }
}
