//! `scrub_pii` on an event's stored JSON bytes, without building Rhai values.
//!
//! Why: when a script hands the event whole to `scrub_pii` and returns it (the shipped
//! `scrub_pii.rhai`), the event never needs to exist as a Rhai map. Converting it into one and
//! back cost more than half of the chain (BENCHMARKS.md, issue 16); this pass reads the bytes
//! once and writes the scrubbed event once, copying every untouched key, number and string as it
//! was written. See `crate::lazy` for when a script gets its event this way.
//!
//! It applies exactly the rules of `scrub.rs` (checked against it in `tests/lazy_event.rs`). The
//! output differs only in form: keys keep their order instead of being sorted, whitespace
//! between tokens is dropped, and numbers and escapes stay as they were written.
//!
//! `None` means "take the general path": the bytes are not an event this reader accepts (then
//! the general path reports the error), or hashing would need the JSON text of a non-string
//! value, which the general path writes from Rhai values.

use rhai::ImmutableString;

use super::names;
use super::scrub::{Mode, ScrubOptions, IDENTITY_NAMES};
use super::text;
use crate::convert::{write_str, Parser, Text};

/// Nesting accepted here: the collector's limit, as for the general parser.
const MAX_DEPTH: usize = sluice_eventlog::MAX_EVENT_DEPTH;

/// Scrubs the JSON object `src`; returns the new bytes and the number of values changed, counted
/// as `scrub::scrub_pii` counts them.
pub fn scrub_bytes(src: &[u8], opts: &ScrubOptions) -> Option<(Vec<u8>, usize)> {
    let text = sluice_eventlog::skim::utf8(src).ok()?;
    let carried = if opts.person_names { carried_names(text)? } else { Vec::new() };
    let mut w = Rewriter {
        p: Parser::new(text),
        out: Vec::with_capacity(src.len() + 64),
        opts,
        carried,
        changed: 0,
        depth: 0,
    };
    w.top()?;
    w.p.skip_ws();
    if w.p.pos != src.len() {
        return None;
    }
    Some((w.out, w.changed))
}

/// Where a value sits, which decides the rules that apply to it.
#[derive(Clone, Copy)]
enum Zone {
    /// Email redaction in strings only.
    Text,
    /// `traits`, `properties` (with `names`: carried names are redacted too) and
    /// `context.traits`: the field rules at any depth, then redaction.
    Fields { names: bool },
}

struct Rewriter<'a, 'o> {
    p: Parser<'a>,
    out: Vec<u8>,
    opts: &'o ScrubOptions,
    carried: Vec<ImmutableString>,
    changed: usize,
    depth: usize,
}

/// A key as read: its text and its bytes as written (quotes included), which are copied out.
struct Key<'a> {
    text: Text<'a>,
    raw: &'a str,
}

impl<'a> Rewriter<'a, '_> {
    /// The event's top level: identity keys, then each part by its rule (as `scrub::scrub_pii`).
    fn top(&mut self) -> Option<()> {
        self.members(|w, key| {
            let key = key.as_str();
            if IDENTITY_NAMES.matches(key) && w.p.peek() == Some(b'"') {
                let start = w.p.pos;
                let value = w.p.string().ok()?;
                if text::is_email(value.as_str()) {
                    let pseudonym = text::pseudonym(value.as_str(), w.opts.key());
                    write_str(&mut w.out, &pseudonym);
                    w.changed += 1;
                    return Some(());
                }
                return w.string(start, value, Zone::Text);
            }
            match key {
                "traits" | "properties" => w.value(Zone::Fields { names: true }),
                "context" if w.p.peek() == Some(b'{') => w.members(|w, key| match key.as_str() {
                    "traits" => w.value(Zone::Fields { names: false }),
                    _ => w.value(Zone::Text),
                }),
                _ => w.value(Zone::Text),
            }
        })
    }

    fn value(&mut self, zone: Zone) -> Option<()> {
        self.p.skip_ws();
        match (self.p.peek()?, zone) {
            // Nothing can change: copy the value as written.
            (_, Zone::Text) if !self.opts.redact_text_emails => self.copy_value(),
            (b'{', Zone::Text) => self.members(|w, _| w.value(Zone::Text)),
            (b'{', Zone::Fields { names }) => self.field_members(names),
            (b'[', _) => self.elements(zone),
            (b'"', _) => {
                let start = self.p.pos;
                let value = self.p.string().ok()?;
                self.string(start, value, zone)
            }
            _ => self.copy_value(),
        }
    }

    /// A string value: email redaction, then (in `traits` and `properties`) carried names.
    fn string(&mut self, start: usize, value: Text<'a>, zone: Zone) -> Option<()> {
        let mut new: Option<String> = None;
        if self.opts.redact_text_emails {
            new = text::redact_emails_opt(value.as_str(), text::DEFAULT_EMAIL_REPLACEMENT);
            self.changed += usize::from(new.is_some());
        }
        if let Zone::Fields { names: true } = zone {
            let current = new.as_deref().unwrap_or(value.as_str());
            if let Some(redacted) = names::redact_names(current, &self.carried) {
                new = Some(redacted);
                self.changed += 1;
            }
        }
        match new {
            Some(s) => write_str(&mut self.out, &s),
            None => self.out.extend_from_slice(&self.p.bytes[start..self.p.pos]),
        }
        Some(())
    }

    /// An object inside a field zone: keys named in `fields` are masked, hashed or dropped; the
    /// other values are walked on.
    fn field_members(&mut self, names: bool) -> Option<()> {
        self.object(|w, key, first| {
            let is_field = w.opts.is_field(key.text.as_str());
            if is_field && matches!(w.opts.mode, Mode::Drop) {
                w.skip_value()?;
                w.changed += 1;
                return Some(false);
            }
            w.write_key(&key, first);
            w.p.skip_ws();
            if !is_field || w.p.bytes[w.p.pos..].starts_with(b"null") {
                // null is left alone by mask and hash, as in the map version.
                w.value(Zone::Fields { names })?;
                return Some(true);
            }
            let replacement = match &w.opts.mode {
                Mode::Mask(r) => {
                    w.skip_value()?;
                    r.to_string()
                }
                _ => {
                    // The hash of a non-string value is taken over its JSON text as the map
                    // version writes it (sorted keys, its number forms): leave that to it.
                    if w.p.peek() != Some(b'"') {
                        return None;
                    }
                    let value = w.p.string().ok()?;
                    text::pseudonym(value.as_str(), w.opts.key())
                }
            };
            w.changed += 1;
            // Names are redacted after the field rules, so the replacement is read for them too.
            let replacement = match names.then(|| names::redact_names(&replacement, &w.carried)).flatten() {
                Some(r) => {
                    w.changed += 1;
                    r
                }
                None => replacement,
            };
            write_str(&mut w.out, &replacement);
            Some(true)
        })
    }

    /// An object whose keys all stay, each value written by `f`.
    fn members(&mut self, mut f: impl FnMut(&mut Self, &Text<'a>) -> Option<()>) -> Option<()> {
        self.object(|w, key, first| {
            w.write_key(&key, first);
            f(w, &key.text)?;
            Some(true)
        })
    }

    /// Walks an object at `{`; `f` reads one member's value (the cursor after its `:`) and says
    /// whether it wrote the member (`first`: no member was written before it).
    fn object(&mut self, mut f: impl FnMut(&mut Self, Key<'a>, bool) -> Option<bool>) -> Option<()> {
        self.p.skip_ws();
        self.enter(b'{')?;
        self.out.push(b'{');
        let mut first = true;
        self.p.skip_ws();
        if self.p.peek()? == b'}' {
            return self.leave(b'}');
        }
        loop {
            self.p.skip_ws();
            if self.p.peek()? != b'"' {
                return None;
            }
            let start = self.p.pos;
            let text = self.p.string().ok()?;
            let raw = &self.p.text[start..self.p.pos];
            self.p.skip_ws();
            if self.p.peek()? != b':' {
                return None;
            }
            self.p.pos += 1;
            self.p.skip_ws();
            if f(self, Key { text, raw }, first)? {
                first = false;
            }
            self.p.skip_ws();
            match self.p.peek()? {
                b',' => self.p.pos += 1,
                b'}' => return self.leave(b'}'),
                _ => return None,
            }
        }
    }

    fn elements(&mut self, zone: Zone) -> Option<()> {
        self.enter(b'[')?;
        self.out.push(b'[');
        self.p.skip_ws();
        if self.p.peek()? == b']' {
            return self.leave(b']');
        }
        loop {
            self.value(zone)?;
            self.p.skip_ws();
            match self.p.peek()? {
                b',' => {
                    self.p.pos += 1;
                    self.out.push(b',');
                }
                b']' => return self.leave(b']'),
                _ => return None,
            }
        }
    }

    fn write_key(&mut self, key: &Key, first: bool) {
        if !first {
            self.out.push(b',');
        }
        self.out.extend_from_slice(key.raw.as_bytes());
        self.out.push(b':');
    }

    fn enter(&mut self, open: u8) -> Option<()> {
        if self.p.peek()? != open || self.depth == MAX_DEPTH {
            return None;
        }
        self.depth += 1;
        self.p.pos += 1;
        Some(())
    }

    fn leave(&mut self, close: u8) -> Option<()> {
        self.p.pos += 1;
        self.depth -= 1;
        self.out.push(close);
        Some(())
    }

    fn copy_value(&mut self) -> Option<()> {
        let start = self.p.pos;
        self.skip_value()?;
        self.out.extend_from_slice(&self.p.bytes[start..self.p.pos]);
        Some(())
    }

    /// Moves past one value, checking it as the general parser would.
    fn skip_value(&mut self) -> Option<()> {
        skip(&mut self.p, &mut self.depth)
    }
}

fn skip(p: &mut Parser, depth: &mut usize) -> Option<()> {
    p.skip_ws();
    match p.peek()? {
        b'"' => p.string().ok().map(drop),
        b't' => p.literal("true", rhai::Dynamic::TRUE).ok().map(drop),
        b'f' => p.literal("false", rhai::Dynamic::FALSE).ok().map(drop),
        b'n' => p.literal("null", rhai::Dynamic::UNIT).ok().map(drop),
        b'-' | b'0'..=b'9' => p.number().ok().map(drop),
        b'{' => each_member(p, depth, &mut |p, depth, _| skip(p, depth)),
        b'[' => container(p, depth, b']', &mut |p, depth| skip(p, depth)),
        _ => None,
    }
}

/// The names the event carries in `traits` and `context.traits` (as `names::carried_names`),
/// read before anything is rewritten: `properties` may come before `traits`. The other values
/// are passed over with [`skip_fast`]; the rewrite that follows checks every byte.
fn carried_names(text: &str) -> Option<Vec<ImmutableString>> {
    let mut p = Parser::new(text);
    let mut depth = 0;
    let mut names = Vec::new();
    each_member(&mut p, &mut depth, &mut |p, depth, key| match key {
        "traits" => collect(p, depth, &mut names),
        "context" => each_member(p, depth, &mut |p, depth, key| match key {
            "traits" => collect(p, depth, &mut names),
            _ => skip_fast(p),
        }),
        _ => skip_fast(p),
    })?;
    names::sort_carried(&mut names);
    Some(names)
}

/// Moves past one value without checking it (`sluice_eventlog::skim`). For the name pre-pass
/// only, which a malformed event can at worst send to the wrong place, never past the end.
fn skip_fast(p: &mut Parser) -> Option<()> {
    p.pos = sluice_eventlog::skim::value_end(p.bytes, p.pos)?;
    Some(())
}

type Member<'f> = dyn FnMut(&mut Parser, &mut usize, &str) -> Option<()> + 'f;

/// Calls `f` with the cursor on each member's value when the value at the cursor is an object
/// (checking the object's own syntax); skips any other value.
fn each_member(p: &mut Parser, depth: &mut usize, f: &mut Member) -> Option<()> {
    p.skip_ws();
    if p.peek()? != b'{' {
        return skip(p, depth);
    }
    container(p, depth, b'}', &mut |p, depth| {
        if p.peek()? != b'"' {
            return None;
        }
        let key = p.string().ok()?;
        p.skip_ws();
        if p.peek()? != b':' {
            return None;
        }
        p.pos += 1;
        p.skip_ws();
        f(p, depth, key.as_str())
    })
}

/// With the cursor on an object's or array's opening bracket: calls `item` with the cursor on
/// each member or element (`,` between them checked), then moves past `close`. Nesting deeper
/// than the collector accepts is refused, as by the general parser.
fn container<'a>(
    p: &mut Parser<'a>,
    depth: &mut usize,
    close: u8,
    item: &mut dyn FnMut(&mut Parser<'a>, &mut usize) -> Option<()>,
) -> Option<()> {
    if *depth == MAX_DEPTH {
        return None;
    }
    *depth += 1;
    p.pos += 1;
    p.skip_ws();
    if p.peek()? != close {
        loop {
            p.skip_ws();
            item(p, depth)?;
            p.skip_ws();
            match p.peek()? {
                b',' => p.pos += 1,
                b if b == close => break,
                _ => return None,
            }
        }
    }
    p.pos += 1;
    *depth -= 1;
    Some(())
}

/// The string values of person-name keys directly inside a `traits` object.
fn collect(p: &mut Parser, depth: &mut usize, names: &mut Vec<ImmutableString>) -> Option<()> {
    each_member(p, depth, &mut |p, _depth, key| {
        if names::is_person_name_key(key) && p.peek() == Some(b'"') {
            let value = p.string().ok()?;
            names::add_carried(names, value.as_str());
            Some(())
        } else {
            skip_fast(p)
        }
    })
}
