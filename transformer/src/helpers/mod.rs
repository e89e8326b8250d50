//! The helper library registered with every transformation's engine. Each helper is documented,
//! with an example, in `docs/transforms.md`; keep the two in step.

pub mod names;
pub mod scrub;
pub mod scrub_bytes;
pub mod text;
pub mod walk;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, INT};

use walk::{Names, Target};

use crate::lazy::LazyEvent;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// What `mask_keys` writes when the script names no replacement.
pub const DEFAULT_MASK_REPLACEMENT: &str = "[redacted]";

fn names(value: &Dynamic) -> Res<Names> {
    Names::from_dynamic(value).map_err(Into::into)
}

fn count(n: usize) -> INT {
    INT::try_from(n).unwrap_or(INT::MAX)
}

pub fn register(engine: &mut Engine) {
    register_text(engine);
    register_deep(engine);
    register_paths(engine);
    register_scrub(engine);
}

fn register_text(engine: &mut Engine) {
    engine
        .register_fn("regex_replace", |t: &str, p: &str, r: &str| -> Res<String> {
            text::regex_replace(t, p, r).map_err(Into::into)
        })
        .register_fn("regex_match", |t: &str, p: &str| -> Res<bool> {
            text::regex_match(t, p).map_err(Into::into)
        })
        .register_fn("redact_emails", |t: &str| {
            text::redact_emails(t, text::DEFAULT_EMAIL_REPLACEMENT)
        })
        .register_fn("redact_emails", |t: &str, r: &str| text::redact_emails(t, r))
        .register_fn("is_email", text::is_email)
        .register_fn("mask", |t: &str| text::mask(t, 0))
        .register_fn("mask", |t: &str, keep_last: INT| {
            text::mask(t, usize::try_from(keep_last).unwrap_or(0))
        })
        .register_fn("sha256", text::sha256_hex)
        .register_fn("hmac_sha256", text::hmac_sha256_hex)
        .register_fn("anonymize_ip", text::anonymize_ip)
        .register_fn("snake_case", text::snake_case);
}

/// The in-place helpers exist for maps (an event or part of one) and arrays (a list of them).
fn register_deep(engine: &mut Engine) {
    fn drop_keys(t: Target, n: &Dynamic) -> Res<INT> {
        Ok(count(walk::drop_keys(t, &names(n)?)))
    }
    fn mask_keys(t: Target, n: &Dynamic, r: &ImmutableString) -> Res<INT> {
        Ok(count(walk::mask_keys(t, &names(n)?, r)))
    }
    fn hash_keys(t: Target, n: &Dynamic, key: Option<&str>) -> Res<INT> {
        Ok(count(walk::hash_keys(t, &names(n)?, key)))
    }
    let redacted = ImmutableString::from(DEFAULT_MASK_REPLACEMENT);
    let redacted2 = redacted.clone();

    engine
        .register_fn("drop_keys", |m: &mut Map, n: Dynamic| drop_keys(Target::Map(m), &n))
        .register_fn("drop_keys", |a: &mut Array, n: Dynamic| drop_keys(Target::Array(a), &n))
        .register_fn("mask_keys", move |m: &mut Map, n: Dynamic| {
            mask_keys(Target::Map(m), &n, &redacted)
        })
        .register_fn("mask_keys", move |a: &mut Array, n: Dynamic| {
            mask_keys(Target::Array(a), &n, &redacted2)
        })
        .register_fn("mask_keys", |m: &mut Map, n: Dynamic, r: ImmutableString| {
            mask_keys(Target::Map(m), &n, &r)
        })
        .register_fn("mask_keys", |a: &mut Array, n: Dynamic, r: ImmutableString| {
            mask_keys(Target::Array(a), &n, &r)
        })
        .register_fn("hash_keys", |m: &mut Map, n: Dynamic| hash_keys(Target::Map(m), &n, None))
        .register_fn("hash_keys", |a: &mut Array, n: Dynamic| {
            hash_keys(Target::Array(a), &n, None)
        })
        .register_fn("hash_keys", |m: &mut Map, n: Dynamic, key: &str| {
            hash_keys(Target::Map(m), &n, Some(key))
        })
        .register_fn("hash_keys", |a: &mut Array, n: Dynamic, key: &str| {
            hash_keys(Target::Array(a), &n, Some(key))
        })
        // A missing key (`meta.params.hmac_key` not configured) means plain SHA-256.
        .register_fn("hash_keys", |m: &mut Map, n: Dynamic, _: ()| {
            hash_keys(Target::Map(m), &n, None)
        })
        .register_fn("hash_keys", |a: &mut Array, n: Dynamic, _: ()| {
            hash_keys(Target::Array(a), &n, None)
        });

    engine
        .register_fn("pseudonymize_emails", |m: &mut Map, n: Dynamic| -> Res<INT> {
            Ok(count(walk::pseudonymize_emails(m, &names(&n)?, None)))
        })
        .register_fn("pseudonymize_emails", |m: &mut Map, n: Dynamic, key: &str| -> Res<INT> {
            Ok(count(walk::pseudonymize_emails(m, &names(&n)?, Some(key))))
        })
        .register_fn("pseudonymize_emails", |m: &mut Map, n: Dynamic, _: ()| -> Res<INT> {
            Ok(count(walk::pseudonymize_emails(m, &names(&n)?, None)))
        });

    // On `()` (a part of the event that is absent, like `event.traits` on a track call) the
    // in-place helpers do nothing, so scripts need no existence check before each call.
    for name in ["drop_keys", "mask_keys", "hash_keys"] {
        engine.register_fn(name, |_: &mut (), _: Dynamic| 0 as INT);
    }
    engine
        .register_fn("mask_keys", |_: &mut (), _: Dynamic, _: ImmutableString| 0 as INT)
        .register_fn("hash_keys", |_: &mut (), _: Dynamic, _: Dynamic| 0 as INT)
        .register_fn("redact_emails_deep", |_: &mut ()| 0 as INT)
        .register_fn("redact_emails_deep", |_: &mut (), _: &str| 0 as INT);

    engine
        .register_fn("redact_emails_deep", |m: &mut Map| {
            count(redact_map(m, text::DEFAULT_EMAIL_REPLACEMENT))
        })
        .register_fn("redact_emails_deep", |m: &mut Map, r: &str| {
            count(redact_map(m, r))
        })
        .register_fn("redact_emails_deep", |a: &mut Array| {
            count(redact_array(a, text::DEFAULT_EMAIL_REPLACEMENT))
        })
        .register_fn("redact_emails_deep", |a: &mut Array, r: &str| {
            count(redact_array(a, r))
        });
}

fn redact_map(map: &mut Map, replacement: &str) -> usize {
    map.values_mut()
        .map(|v| walk::redact_emails_in(v, replacement))
        .sum()
}

fn redact_array(arr: &mut Array, replacement: &str) -> usize {
    arr.iter_mut()
        .map(|v| walk::redact_emails_in(v, replacement))
        .sum()
}

fn register_paths(engine: &mut Engine) {
    engine
        .register_fn("flatten", |m: &mut Map| walk::flatten(m, "_"))
        .register_fn("flatten", |m: &mut Map, sep: &str| walk::flatten(m, sep))
        .register_fn("get_path", |m: &mut Map, path: &str| walk::get_path(m, path))
        .register_fn(
            "set_path",
            |m: &mut Map, path: &str, value: Dynamic| -> Res<()> {
                walk::set_path(m, path, value).map_err(Into::into)
            },
        )
        .register_fn("remove_path", |m: &mut Map, path: &str| {
            walk::remove_path(m, path)
        });
}

/// `scrub_pii(event, options)`: the whole of the shipped scrub_pii script in one native walk
/// (see `scrub.rs`). `options` is normally `meta.params`; `()` or no argument means defaults.
fn register_scrub(engine: &mut Engine) {
    engine
        .register_fn("scrub_pii", |event: &mut Map, options: Map| -> Res<INT> {
            let opts = scrub::ScrubOptions::from_map(&options)?;
            Ok(count(scrub::scrub_pii(event, &opts)))
        })
        .register_fn("scrub_pii", |event: &mut Map, _: ()| {
            count(scrub::scrub_pii(event, &scrub::ScrubOptions::default()))
        })
        .register_fn("scrub_pii", |event: &mut Map| {
            count(scrub::scrub_pii(event, &scrub::ScrubOptions::default()))
        });
    // The same three for an event that stays bytes (`lazy.rs`).
    engine
        .register_type_with_name::<LazyEvent>("map")
        .register_fn("scrub_pii", |event: &mut LazyEvent, options: Map| -> Res<INT> {
            let opts = scrub::ScrubOptions::from_map(&options)?;
            event.scrub_pii(&opts).map(count)
        })
        .register_fn("scrub_pii", |event: &mut LazyEvent, _: ()| {
            event.scrub_pii(&scrub::ScrubOptions::default()).map(count)
        })
        .register_fn("scrub_pii", |event: &mut LazyEvent| {
            event.scrub_pii(&scrub::ScrubOptions::default()).map(count)
        });
}
