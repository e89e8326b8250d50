//! A small scanner over Rhai source text that finds top-level `fn` definitions.
//!
//! Why: Rhai moves the position of a limit error (too many operations, stack overflow, data too
//! large, terminated) to the call site at every function boundary, and the outermost call from
//! Rust has no position, so an error inside `fn transform` would come back without a line. We
//! therefore run the *body* of `transform` as top-level code (with `event` and `meta` in the
//! scope) where positions survive. [`inline_body`] produces that source: the original text with
//! the `fn transform(event, meta) {` header and its closing `}` blanked out, so every line
//! keeps its number. Rhai itself has already parsed the script, so the scanner only needs to
//! understand comments, string and character literals, and braces.

/// A top-level function definition: byte ranges of the header (`fn name(a, b) {`) and of the
/// closing brace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FnSpan {
    pub name: String,
    pub header: (usize, usize),
    pub close: usize,
}

/// Top-level content other than function definitions, with its line.
#[derive(Debug, PartialEq, Eq)]
pub struct TopLevelCode {
    pub line: usize,
}

struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self, ahead: usize) -> u8 {
        self.src.get(self.pos + ahead).copied().unwrap_or(0)
    }

    fn line_at(&self, pos: usize) -> usize {
        self.src[..pos].iter().filter(|b| **b == b'\n').count() + 1
    }

    /// Skips whitespace and comments; returns false at the end of input.
    fn skip_trivia(&mut self) -> bool {
        loop {
            match (self.peek(0), self.peek(1)) {
                (0, _) => return false,
                (b'/', b'/') => {
                    while !matches!(self.peek(0), b'\n' | 0) {
                        self.pos += 1;
                    }
                }
                (b'/', b'*') => self.skip_block_comment(),
                (c, _) if c.is_ascii_whitespace() => self.pos += 1,
                _ => return true,
            }
        }
    }

    /// Rhai block comments nest.
    fn skip_block_comment(&mut self) {
        let mut depth = 0;
        while self.pos < self.src.len() {
            match (self.peek(0), self.peek(1)) {
                (b'/', b'*') => {
                    depth += 1;
                    self.pos += 2;
                }
                (b'*', b'/') => {
                    depth -= 1;
                    self.pos += 2;
                    if depth == 0 {
                        return;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a quoted literal starting at `pos` (`"..."`, `'c'`), honouring backslash escapes.
    fn skip_quoted(&mut self, quote: u8) {
        self.pos += 1;
        while self.pos < self.src.len() {
            match self.peek(0) {
                b'\\' => self.pos += 2,
                c if c == quote => {
                    self.pos += 1;
                    return;
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Skips a raw string `#"..."#` (any number of `#`).
    fn skip_raw(&mut self) {
        let mut hashes = 0;
        while self.peek(0) == b'#' {
            hashes += 1;
            self.pos += 1;
        }
        self.pos += 1; // the opening quote
        while self.pos < self.src.len() {
            if self.peek(0) == b'"' && (1..=hashes).all(|i| self.peek(i) == b'#') {
                self.pos += 1 + hashes;
                return;
            }
            self.pos += 1;
        }
    }

    /// Skips a back-tick string, including the code inside `${ ... }` interpolations.
    fn skip_backtick(&mut self) {
        self.pos += 1;
        while self.pos < self.src.len() {
            match (self.peek(0), self.peek(1)) {
                (b'\\', _) => self.pos += 2,
                (b'`', _) => {
                    self.pos += 1;
                    return;
                }
                (b'$', b'{') => {
                    self.pos += 1;
                    self.skip_balanced();
                }
                _ => self.pos += 1,
            }
        }
    }

    fn is_raw_string_start(&self) -> bool {
        let mut i = 0;
        while self.peek(i) == b'#' {
            i += 1;
        }
        i > 0 && self.peek(i) == b'"'
    }

    /// With `pos` on an opening brace, moves past its matching closing brace and returns the
    /// closing brace's offset.
    fn skip_balanced(&mut self) -> usize {
        let mut depth = 0usize;
        while self.skip_trivia() {
            match self.peek(0) {
                b'"' | b'\'' => self.skip_quoted(self.peek(0)),
                b'`' => self.skip_backtick(),
                b'#' if self.is_raw_string_start() => self.skip_raw(),
                b'{' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' => {
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                    if depth == 0 {
                        return self.pos - 1;
                    }
                }
                _ => self.pos += 1,
            }
        }
        self.pos
    }

    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek(0).is_ascii_alphanumeric() || self.peek(0) == b'_' {
            self.pos += 1;
        }
        std::str::from_utf8(&self.src[start..self.pos]).unwrap_or("")
    }
}

/// Lists the top-level `fn` definitions; fails at the first top-level code that is not one.
pub fn functions(source: &str) -> Result<Vec<FnSpan>, TopLevelCode> {
    let mut s = Scanner { src: source.as_bytes(), pos: 0 };
    let mut out = Vec::new();
    while s.skip_trivia() {
        let start = s.pos;
        let mut word = s.word();
        if word == "private" {
            s.skip_trivia();
            word = s.word();
        }
        if word != "fn" {
            return Err(TopLevelCode { line: s.line_at(start) });
        }
        s.skip_trivia();
        let name = s.word().to_string();
        // The rest of the header (parameters) holds no braces; the body starts at the first one.
        while !matches!(s.peek(0), b'{' | 0) {
            s.pos += 1;
        }
        let open = s.pos;
        let close = s.skip_balanced();
        out.push(FnSpan { name, header: (start, open + 1), close });
    }
    Ok(out)
}

/// `source` with `fn NAME(...) {` blanked out (newlines kept) and its closing brace turned into
/// `;`, so the body becomes top-level code on its original lines, separated from any function
/// definition that follows. (A `;` does not change the value of Rhai's last statement.)
/// `None` when there is no such function.
pub fn inline_body(source: &str, spans: &[FnSpan], name: &str) -> Option<String> {
    let span = spans.iter().find(|f| f.name == name)?;
    let mut bytes = source.as_bytes().to_vec();
    for b in &mut bytes[span.header.0..span.header.1] {
        if *b != b'\n' {
            *b = b' ';
        }
    }
    bytes[span.close] = b';';
    Some(String::from_utf8(bytes).expect("only ASCII bytes were replaced by spaces"))
}

/// If the last statement of function `name` is the bare identifier `param` (the usual
/// `... event }` ending), returns its byte range. Replacing it lets the host take the event out
/// of the scope instead of Rhai copying the whole map to return it.
pub fn trailing_identifier(source: &str, span: &FnSpan, param: &str) -> Option<(usize, usize)> {
    let body = &source.as_bytes()[span.header.1..span.close];
    let trimmed_end = body.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
    let ident_start = trimmed_end.checked_sub(param.len())?;
    if &body[ident_start..trimmed_end] != param.as_bytes() {
        return None;
    }
    // It must be a statement of its own: preceded (ignoring whitespace) by `;`, `}` or `{`,
    // and not by part of a longer identifier or an operator.
    let before = body[..ident_start]
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|i| body[i]);
    let clean_start = ident_start == 0 || !is_ident_byte(body[ident_start - 1]);
    match before {
        Some(b';') | Some(b'}') | None if clean_start => {
            Some((span.header.1 + ident_start, span.header.1 + trimmed_end))
        }
        _ => None,
    }
}

/// Whether every mention of the identifier `meta` in `source` is `meta.<field>` with a field in
/// `allowed`. Comments and strings are scanned too (an interpolated string can read `meta`), so
/// the answer errs on the side of "no". A `meta` passed on whole, indexed with `[]`, or read for
/// another field makes it false.
pub fn meta_reads_only(source: &str, meta: &str, allowed: &[&str]) -> bool {
    let bytes = source.as_bytes();
    let mut from = 0;
    while let Some(found) = source[from..].find(meta) {
        let at = from + found;
        let end = at + meta.len();
        from = end;
        let bounded = (at == 0 || !is_ident_byte(bytes[at - 1])) && bytes.get(end).is_none_or(|b| !is_ident_byte(*b));
        if !bounded {
            continue;
        }
        let rest = source[end..].trim_start();
        let Some(field) = rest.strip_prefix('.') else { return false };
        let field = field.trim_start();
        let len = field.bytes().take_while(|b| is_ident_byte(*b)).count();
        if !allowed.contains(&&field[..len]) {
            return false;
        }
    }
    true
}

/// Whether every mention of the variable `event` in the body of `span` hands it whole to one of
/// `helpers` as the first argument (`helper(event, …)`, `helper(event)`, `event.helper(…)`),
/// apart from the body's last statement at `trailing` (the bare variable, returned). Comments
/// and quoted strings are skipped; back-tick strings are read as code, so an interpolated
/// `${event}` counts as a mention, and any other mention makes the answer false.
pub fn event_only_handed_to(
    source: &str,
    span: &FnSpan,
    event: &str,
    helpers: &[&str],
    trailing: Option<(usize, usize)>,
) -> bool {
    let tokens = body_tokens(source, span);
    let at = |i: usize| tokens.get(i).map_or("", |t| t.1);
    let before = |i: usize, n: usize| i.checked_sub(n).map_or("", at);
    tokens.iter().enumerate().all(|(i, &(start, word))| {
        if word != event || trailing.is_some_and(|(a, _)| a == start) {
            return true;
        }
        let as_argument = before(i, 1) == "("
            && helpers.contains(&before(i, 2))
            && before(i, 3) != "."
            && matches!(at(i + 1), "," | ")");
        let as_receiver = at(i + 1) == "." && helpers.contains(&at(i + 2)) && at(i + 3) == "(" && before(i, 1) != ".";
        as_argument || as_receiver
    })
}

/// The options argument of one call in a body of calls only (see [`calls_only`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallArg {
    /// No argument, or `()`.
    Default,
    /// `meta.params`.
    Params,
}

/// When the body of `span` is nothing but statements `helper(event)`, `helper(event, ())`,
/// `helper(event, meta.params)` (or the same as method calls on `event`), then the bare `event`
/// at `trailing`: the options argument of each call, in order. Such a body needs no interpreter:
/// the calls can be made directly. `None` for any other body.
pub fn calls_only(
    source: &str,
    span: &FnSpan,
    [event, meta]: [&str; 2],
    helper: &str,
    trailing: Option<(usize, usize)>,
) -> Option<Vec<CallArg>> {
    let (end, _) = trailing?;
    let tokens = body_tokens(source, span);
    let words: Vec<&str> = tokens.iter().filter(|t| t.0 < end).map(|t| t.1).collect();
    if tokens.iter().filter(|t| t.0 >= end).count() != 1 {
        return None; // something follows the returned event
    }
    let forms: [(&[&str], CallArg); 6] = [
        (&[helper, "(", event, ")"], CallArg::Default),
        (&[helper, "(", event, ",", "(", ")", ")"], CallArg::Default),
        (&[helper, "(", event, ",", meta, ".", "params", ")"], CallArg::Params),
        (&[event, ".", helper, "(", ")"], CallArg::Default),
        (&[event, ".", helper, "(", "(", ")", ")"], CallArg::Default),
        (&[event, ".", helper, "(", meta, ".", "params", ")"], CallArg::Params),
    ];
    let mut calls = Vec::new();
    let mut rest = words.as_slice();
    while let Some((first, tail)) = rest.split_first() {
        if *first == ";" {
            rest = tail;
            continue;
        }
        let (form, arg) = forms.iter().find(|(form, _)| rest.starts_with(form))?;
        rest = &rest[form.len()..];
        // A call is a statement of its own: `;` after it (the returned event comes last).
        rest = rest.strip_prefix(&[";"]).unwrap_or(rest);
        calls.push(*arg);
    }
    // The last call must have ended with `;`: `scrub_pii(event) event` is not two statements.
    let last = words.last().copied();
    (calls.is_empty() || last == Some(";")).then_some(calls)
}

/// The tokens of a function body: identifiers (and numbers) whole, any other character alone,
/// with their byte offsets. Comments and quoted strings are left out; back-tick strings are
/// read as code, so an interpolation's contents are seen.
fn body_tokens<'a>(source: &'a str, span: &FnSpan) -> Vec<(usize, &'a str)> {
    let mut s = Scanner { src: source.as_bytes(), pos: span.header.1 };
    let mut tokens: Vec<(usize, &str)> = Vec::new();
    while s.skip_trivia() && s.pos < span.close {
        let start = s.pos;
        match s.peek(0) {
            b'"' | b'\'' => s.skip_quoted(s.peek(0)),
            b'#' if s.is_raw_string_start() => s.skip_raw(),
            b if is_ident_byte(b) => tokens.push((start, s.word())),
            _ => {
                s.pos += 1;
                tokens.push((start, &source[start..s.pos.min(source.len())]));
            }
        }
    }
    tokens
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "// a { comment\nfn helper(x) { `${x + \"}\"}` }\n/* block /* nested } */ */\nprivate fn transform(event, meta) {\n  let s = \"{\"; let c = '}'; let r = #\"}\"#;\n  if true { s } else { c };\n  event\n}\n";

    #[test]
    fn finds_functions_across_literals_and_comments() {
        let fns = functions(SRC).unwrap();
        let names: Vec<_> = fns.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["helper", "transform"]);
        assert_eq!(&SRC[fns[1].close..fns[1].close + 2], "}\n");
    }

    #[test]
    fn inlining_keeps_line_numbers() {
        let fns = functions(SRC).unwrap();
        let inlined = inline_body(SRC, &fns, "transform").unwrap();
        assert_eq!(inlined.lines().count(), SRC.lines().count());
        assert!(!inlined.contains("private fn transform"));
        assert!(inlined.contains("fn helper(x)"));
        assert!(inlined.lines().nth(4).unwrap().contains("let s ="));
    }

    #[test]
    fn finds_a_trailing_event_statement() {
        let fns = functions(SRC).unwrap();
        let (a, b) = trailing_identifier(SRC, &fns[1], "event").unwrap();
        assert_eq!(&SRC[a..b], "event");
        let expr = "fn transform(e, m) { let x = 1 +\n e }";
        assert_eq!(trailing_identifier(expr, &functions(expr).unwrap()[0], "e"), None);
        let longer = "fn transform(e, m) { the }";
        assert_eq!(trailing_identifier(longer, &functions(longer).unwrap()[0], "e"), None);
        let only = "fn transform(e, m) { e }";
        assert!(trailing_identifier(only, &functions(only).unwrap()[0], "e").is_some());
        let ret = "fn transform(e, m) { return e }";
        assert_eq!(trailing_identifier(ret, &functions(ret).unwrap()[0], "e"), None);
    }

    #[test]
    fn meta_reads_are_found_in_code_strings_and_comments() {
        let ok = ["params", "source"];
        assert!(meta_reads_only("{ f(e, meta.params); meta . source; e }", "meta", &ok));
        assert!(meta_reads_only("{ e.metadata = 1; e }", "meta", &ok), "a longer identifier is not meta");
        assert!(!meta_reads_only("{ e.d = meta.destination; e }", "meta", &ok));
        assert!(!meta_reads_only("{ e.via = `${meta.destination}`; e }", "meta", &ok));
        assert!(!meta_reads_only("{ e.m = meta; e }", "meta", &ok));
        assert!(!meta_reads_only("{ e.d = meta[\"destination\"]; e }", "meta", &ok));
    }

    #[test]
    fn an_event_only_handed_to_helpers_is_found() {
        let only = |src: &str| {
            let fns = functions(src).unwrap();
            let span = fns.iter().find(|f| f.name == "transform").unwrap();
            let trailing = trailing_identifier(src, span, "event");
            event_only_handed_to(src, span, "event", &["scrub_pii"], trailing)
        };
        assert!(only(SHIPPED));
        assert!(only("fn transform(event, meta) { scrub_pii(event); event.scrub_pii(meta.params); event }"));
        assert!(only("fn transform(event, meta) { // the event\n let s = \"event.x\"; scrub_pii( event , #{}); event }"));
        assert!(only("fn transform(event, meta) { if meta.params.off { return (); } scrub_pii(event, ()); event }"));
        assert!(only("fn helper(event) { event.x } fn transform(event, meta) { event }"), "other functions are not read");
        assert!(!only("fn transform(event, meta) { scrub_pii(event); event.x = 1; event }"));
        assert!(!only("fn transform(event, meta) { scrub_pii(event); return event; }"));
        assert!(!only("fn transform(event, meta) { scrub_pii(event); [event, event] }"));
        assert!(!only("fn transform(event, meta) { let e = event; e }"));
        assert!(!only("fn transform(event, meta) { mask_keys(event, [\"x\"]); event }"));
        assert!(!only("fn transform(event, meta) { x.scrub_pii(event); event }"));
        assert!(!only("fn transform(event, meta) { scrub_pii(event.traits); event }"));
        assert!(!only("fn transform(event, meta) { print(`${event}`); event }"));
        assert!(!only("fn transform(event, meta) { scrub_pii(event); event?.x }"));
    }

    #[test]
    fn a_body_of_helper_calls_only_is_recognised() {
        let calls = |src: &str| {
            let fns = functions(src).unwrap();
            let span = fns.iter().find(|f| f.name == "transform").unwrap();
            let (e, m) = ("event", "meta");
            calls_only(src, span, [e, m], "scrub_pii", trailing_identifier(src, span, e))
        };
        use CallArg::{Default, Params};
        assert_eq!(calls(SHIPPED), Some(vec![Params]));
        assert_eq!(calls("fn transform(event, meta) { event }"), Some(vec![]));
        assert_eq!(
            calls("fn transform(event, meta) { scrub_pii(event); ; event.scrub_pii(()); event.scrub_pii(meta . params); event }"),
            Some(vec![Default, Default, Params])
        );
        for other in [
            "fn transform(event, meta) { scrub_pii(event, #{mode: \"drop\"}); event }",
            "fn transform(event, meta) { scrub_pii(event, meta.params.x); event }",
            "fn transform(event, meta) { scrub_pii(event, \"x\"); event }",
            "fn transform(event, meta) { if true { scrub_pii(event); } event }",
            "fn transform(event, meta) { let n = scrub_pii(event); event }",
            "fn transform(event, meta) { scrub_pii(event); print(1); event }",
            "fn transform(event, meta) { scrub_pii(event); return event; }",
            "fn transform(event, meta) { scrub_pii(event); event; 1 }",
            "fn transform(event, meta) { print(`${1}`); event }",
        ] {
            assert_eq!(calls(other), None, "{other}");
        }
    }

    const SHIPPED: &str = include_str!("../../transforms/scrub_pii.rhai");

    #[test]
    fn top_level_code_is_reported_with_its_line() {
        assert_eq!(functions("fn a() {}\n\nlet x = 1;\n"), Err(TopLevelCode { line: 3 }));
        assert_eq!(functions("const X = 1;"), Err(TopLevelCode { line: 1 }));
    }
}
