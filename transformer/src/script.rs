//! One compiled transformation: its sandboxed engine, its AST, and the calls into it.
//!
//! Limits: sizes and call depth are enforced by Rhai itself (engine settings). Operations and
//! wall-clock time are enforced by our progress callback against a per-thread budget set before
//! each call, because the budget differs per call (a batch gets `n` times the per-event budget)
//! while an engine's settings are fixed and shared by every thread.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Scope, AST};

use crate::error::{LimitKind, ScriptRef, TransformError};
use crate::helpers::scrub::ScrubOptions;
use crate::{helpers, lazy, scan, Limits, Meta};

/// How often (in operations) the progress callback looks at the clock: reading it costs about as
/// much as a cheap Rhai operation, and 64 operations take microseconds, far below any budget.
const CLOCK_CHECK_EVERY: u64 = 64;

const TERMINATED_OPERATIONS: i64 = 1;
const TERMINATED_TIME: i64 = 2;

#[derive(Clone, Copy)]
struct Budget {
    max_operations: u64,
    deadline: Option<Instant>,
}

thread_local! {
    static BUDGET: Cell<Budget> = const { Cell::new(Budget { max_operations: u64::MAX, deadline: None }) };
}

/// Sets this thread's budget for one call and restores the previous one when dropped (so a
/// panic or an early return never leaves a stale deadline behind).
struct BudgetGuard(Budget);

impl BudgetGuard {
    fn set(limits: &Limits, scale: u64) -> BudgetGuard {
        let scale = scale.max(1);
        let budget = Budget {
            max_operations: limits.max_operations.saturating_mul(scale),
            deadline: Some(Instant::now() + Duration::from_millis(limits.max_time_ms.saturating_mul(scale))),
        };
        BudgetGuard(BUDGET.with(|b| b.replace(budget)))
    }
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        BUDGET.with(|b| b.set(self.0));
    }
}

fn check_budget(operations: u64) -> Option<Dynamic> {
    let budget = BUDGET.with(Cell::get);
    if operations > budget.max_operations {
        return Some(Dynamic::from_int(TERMINATED_OPERATIONS));
    }
    if operations.is_multiple_of(CLOCK_CHECK_EVERY) {
        if let Some(deadline) = budget.deadline {
            if Instant::now() >= deadline {
                return Some(Dynamic::from_int(TERMINATED_TIME));
            }
        }
    }
    None
}

/// Gives every compiled version its own id, so per-thread caches never mix versions (an address
/// could be reused by a later version after a reload).
static NEXT_COMPILED_ID: AtomicU64 = AtomicU64::new(1);

/// The `meta` map last built on this thread. Consecutive events of a batch share source,
/// destination, write key and params, so the map is cloned from this (reference-count bumps)
/// and only `message_id` is new, instead of allocating four strings and inserting five keys.
struct MetaTemplate {
    compiled: u64,
    source: ImmutableString,
    destination: ImmutableString,
    write_key_id: ImmutableString,
    map: Map,
}

thread_local! {
    static META_TEMPLATE: RefCell<Option<MetaTemplate>> = const { RefCell::new(None) };
    /// One scope per thread, reused by every call: its buffers survive between events. Borrowed
    /// with `try_borrow_mut` so that a nested call (none exists today) would get a fresh one.
    static SCOPE: RefCell<Scope<'static>> = RefCell::new(Scope::new());
}

/// Builds the sandboxed engine for one transformation. It is kept across reloads of the script.
pub fn build_engine(id: &str, limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_call_levels(limits.max_call_depth)
        // Rhai's defaults differ between debug and release builds; fix them so a script that
        // passes `cargo test` compiles the same in production.
        .set_max_expr_depths(64, 32)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        // Operations are counted by `check_budget`; 0 turns off Rhai's own fixed limit.
        .set_max_operations(0)
        // The interner is one lock shared by every thread running this script; events rarely
        // repeat strings enough to pay for it.
        .set_max_strings_interned(0)
        // Undeclared variables are compile errors, so typos surface at `sluice validate`.
        .set_strict_variables(true)
        .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
        .on_progress(check_budget);
    // Code built from event data must never run.
    engine.disable_symbol("eval");
    let print_id = id.to_string();
    engine.on_print(move |text| tracing::info!(transformation = %print_id, "script print: {text}"));
    let debug_id = id.to_string();
    engine.on_debug(move |text, _source, pos| {
        tracing::debug!(transformation = %debug_id, line = ?pos.line(), "script debug: {text}")
    });
    helpers::register(&mut engine);
    engine.register_fn(KEEP_EVENT_FN, || KeepEvent);
    engine
}

/// What one call of `transform` produced for one input event.
pub type Outputs = Vec<Dynamic>;

/// Returned by the body when it ends with the bare event variable; see [`scan::trailing_identifier`].
#[derive(Clone, Copy)]
struct KeepEvent;

const KEEP_EVENT_FN: &str = "__sluice_keep_event";

/// The helpers that take a [`crate::lazy::LazyEvent`] as well as a map.
const LAZY_HELPERS: [&str; 1] = ["scrub_pii"];

/// An entry point (`transform` or `transform_batch`) compiled as top-level code: see `scan.rs`
/// for why.
struct Entry {
    ast: AST,
    /// The function's parameter names, bound in the scope in this order.
    params: [String; 2],
}

pub struct Compiled {
    pub script: ScriptRef,
    /// Unique per compiled version; keys the per-thread meta template.
    id: u64,
    engine: Arc<Engine>,
    transform: Option<Entry>,
    batch: Option<Entry>,
    limits: Limits,
    /// `meta.params`: read-only, and copied into each event's `meta` (from the per-thread
    /// template), so no event can change what the next one sees. Deliberately not a shared
    /// value: Rhai's data-size check panics on a shared value found inside a map, which any
    /// write into `meta` (or `event.m = meta`) would trigger.
    params: Dynamic,
    pub has_transform: bool,
    pub has_batch: bool,
    /// The script may look at `meta.destination` (or at `meta` as a whole), so its output can
    /// differ per destination and destinations cannot share one run of it.
    pub reads_destination: bool,
    /// `fn transform` only hands its event to `scrub_pii` and returns it: the event can stay
    /// bytes (`lazy.rs`).
    pub lazy_event: bool,
    /// `fn transform` is nothing but `scrub_pii` calls with fixed options and the returned event:
    /// the chain makes the calls itself, with these options, without running the interpreter.
    pub native_calls: Option<Vec<ScrubOptions>>,
}

impl Compiled {
    pub fn compile(
        script: ScriptRef,
        engine: Arc<Engine>,
        source: &str,
        limits: &Limits,
        params: Dynamic,
    ) -> Result<Compiled, TransformError> {
        let compile_error = |line: Option<usize>, message: String| TransformError::Compile {
            script: script.clone(),
            line,
            message,
        };
        // Rhai parses (and reports syntax errors for) the script as written.
        let ast = engine
            .compile(source)
            .map_err(|e| compile_error(e.1.line(), e.0.to_string()))?;
        let spans = scan::functions(source).map_err(|top| {
            compile_error(
                Some(top.line),
                "code outside functions is not supported: a script holds fn definitions only \
                 (put defaults and constants inside fn transform)"
                    .into(),
            )
        })?;
        let params_of = |name: &str| -> Result<Option<[String; 2]>, TransformError> {
            let Some(f) = ast.iter_functions().find(|f| f.name == name) else {
                return Ok(None);
            };
            match f.params.as_slice() {
                [a, b] => Ok(Some([a.to_string(), b.to_string()])),
                other => Err(compile_error(
                    None,
                    format!("fn {name} must take 2 parameters (event(s), meta), this one takes {}", other.len()),
                )),
            }
        };
        let entry = |name: &str| -> Result<Option<Entry>, TransformError> {
            let Some(params) = params_of(name)? else {
                return Ok(None);
            };
            let span = spans.iter().find(|f| f.name == name).ok_or_else(|| {
                compile_error(None, format!("fn {name} must be defined at the top level of the script"))
            })?;
            let mut text = scan::inline_body(source, &spans, name).expect("span exists");
            if let Some((a, b)) = scan::trailing_identifier(source, span, &params[0]) {
                text.replace_range(a..b, &format!("{KEEP_EVENT_FN}()"));
            }
            let mut scope = Scope::new();
            scope.push_dynamic(params[0].as_str(), Dynamic::UNIT);
            scope.push_dynamic(params[1].as_str(), Dynamic::UNIT);
            let mut entry_ast = engine
                .compile_with_scope(&scope, &text)
                .map_err(|e| compile_error(e.1.line(), e.0.to_string()))?;
            entry_ast.set_source(script.file.display().to_string());
            Ok(Some(Entry { ast: entry_ast, params }))
        };
        let transform = entry("transform")?;
        let batch = entry("transform_batch")?;
        if transform.is_none() && batch.is_none() {
            return Err(compile_error(
                None,
                "the script defines neither fn transform(event, meta) nor fn transform_batch(events, meta)".into(),
            ));
        }
        // The entry points' own headers name `meta` as a parameter: blank them before looking.
        const SHARED_META: [&str; 4] = ["params", "source", "message_id", "write_key_id"];
        let mut bodies = source.as_bytes().to_vec();
        for span in spans.iter().filter(|f| f.name == "transform" || f.name == "transform_batch") {
            bodies[span.header.0..span.header.1].iter_mut().for_each(|b| *b = b' ');
        }
        let bodies = String::from_utf8_lossy(&bodies);
        let reads_destination = [&transform, &batch]
            .into_iter()
            .flatten()
            .any(|e| !scan::meta_reads_only(&bodies, &e.params[1], &SHARED_META));
        let (lazy_event, native_calls) = lazy_plan(source, &spans, &ast, transform.as_ref().filter(|_| batch.is_none()), &params);
        Ok(Compiled {
            native_calls,
            lazy_event,
            reads_destination,
            id: NEXT_COMPILED_ID.fetch_add(1, Ordering::Relaxed),
            has_transform: transform.is_some(),
            has_batch: batch.is_some(),
            script,
            engine,
            transform,
            batch,
            limits: limits.clone(),
            params,
        })
    }

    pub fn meta_map(&self, meta: &Meta) -> Map {
        META_TEMPLATE.with(|cell| {
            let mut cached = cell.borrow_mut();
            let hit = cached.as_ref().is_some_and(|t| {
                t.compiled == self.id
                    && t.source == meta.source
                    && t.destination == meta.destination
                    && t.write_key_id == meta.write_key_id
            });
            if !hit {
                *cached = Some(MetaTemplate {
                    compiled: self.id,
                    source: meta.source.into(),
                    destination: meta.destination.into(),
                    write_key_id: meta.write_key_id.into(),
                    map: self.build_meta_map(meta),
                });
            }
            let template = cached.as_ref().expect("filled above");
            let mut map = template.map.clone();
            if let Some(id) = map.get_mut("message_id") {
                *id = meta.message_id.into();
            }
            map
        })
    }

    fn build_meta_map(&self, meta: &Meta) -> Map {
        let mut map = Map::new();
        map.insert("source".into(), meta.source.into());
        map.insert("destination".into(), meta.destination.into());
        map.insert("message_id".into(), meta.message_id.into());
        map.insert("write_key_id".into(), meta.write_key_id.into());
        map.insert("params".into(), self.params.clone());
        map
    }

    /// Runs `transform` on one event (or `transform_batch` on a batch of one when the script only
    /// defines that).
    pub fn run_one(&self, event: Dynamic, meta: &Meta) -> Result<Outputs, TransformError> {
        if !self.has_transform {
            let mut outcomes = self.run_batch(vec![event], &[*meta])?;
            return outcomes.pop().expect("run_batch returns one outcome per event");
        }
        let result = {
            let _budget = BudgetGuard::set(&self.limits, 1);
            let entry = self.transform.as_ref().expect("has_transform");
            self.eval(entry, event, Dynamic::from_map(self.meta_map(meta)))
        };
        self.outputs(result.map_err(|e| self.runtime_error(*e, 1))?)
    }

    /// Runs `transform_batch`: `meta` is `{destination, params, per_event: [meta of each event]}`
    /// and the script returns an array with one outcome (event, `()` or array) per input event.
    /// The outer error means the whole call failed (every event of the batch is affected).
    #[allow(clippy::type_complexity)]
    pub fn run_batch(
        &self,
        events: Vec<Dynamic>,
        metas: &[Meta],
    ) -> Result<Vec<Result<Outputs, TransformError>>, TransformError> {
        let n = events.len();
        let mut meta = Map::new();
        meta.insert(
            "destination".into(),
            metas.first().map_or("", |m| m.destination).into(),
        );
        meta.insert("params".into(), self.params.clone());
        let per_event = metas
            .iter()
            .map(|m| Dynamic::from_map(self.meta_map(m)))
            .collect::<Vec<_>>();
        meta.insert("per_event".into(), Dynamic::from_array(per_event));
        let result = {
            let _budget = BudgetGuard::set(&self.limits, n as u64);
            let entry = self.batch.as_ref().expect("run_batch is only called when has_batch");
            self.eval(entry, Dynamic::from_array(events), Dynamic::from_map(meta))
        };
        let value = result.map_err(|e| self.runtime_error(*e, n as u64))?;
        let outcomes = value.into_array().map_err(|t| self.bad_output(format!(
            "transform_batch returned a {t}; it must return an array with one outcome per input event"
        )))?;
        if outcomes.len() != n {
            return Err(self.bad_output(format!(
                "transform_batch returned {} outcomes for {n} events; it must return one per input event",
                outcomes.len()
            )));
        }
        Ok(outcomes.into_iter().map(|o| self.outputs(o)).collect())
    }

    fn eval(&self, entry: &Entry, a: Dynamic, b: Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
        SCOPE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scope) => {
                let result = self.eval_in(&mut scope, entry, a, b);
                // Drop what the script left behind now, not when the next event comes.
                scope.clear();
                result
            }
            Err(_) => self.eval_in(&mut Scope::new(), entry, a, b),
        })
    }

    fn eval_in(
        &self,
        scope: &mut Scope,
        entry: &Entry,
        a: Dynamic,
        b: Dynamic,
    ) -> Result<Dynamic, Box<EvalAltResult>> {
        scope.clear();
        scope.push_dynamic(entry.params[0].as_str(), a);
        // `meta` goes in as a constant, which is what keeps `meta.params` read-only: Rhai checks
        // the read-only flag of nested values only when their variable is constant. (New keys
        // can still be added to `meta`; each event has its own copy.)
        scope.push_constant_dynamic(entry.params[1].as_str(), b);
        let result = self.engine.eval_ast_with_scope::<Dynamic>(scope, &entry.ast)?;
        if result.is::<KeepEvent>() {
            // The body ended with the bare event variable: move it out instead of a deep copy.
            let event = scope.get_mut(&entry.params[0]).map(std::mem::take);
            return Ok(event.unwrap_or(Dynamic::UNIT).flatten());
        }
        Ok(result.flatten())
    }

    /// Interprets a returned value: a map is one event, `()` a drop, an array a split.
    fn outputs(&self, value: Dynamic) -> Result<Outputs, TransformError> {
        if lazy::is_event(&value) {
            return Ok(vec![value]);
        }
        if value.is_unit() {
            return Ok(Vec::new());
        }
        let type_name = value.type_name();
        let items = value.into_array().map_err(|_| {
            self.bad_output(format!(
                "transform returned a {type_name}; it must return the event (a map), () to drop it, or an array of events"
            ))
        })?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let item = item.flatten();
            if !lazy::is_event(&item) {
                return Err(self.bad_output(format!(
                    "element {i} of the returned array is a {}, not an event (a map)",
                    item.type_name()
                )));
            }
            out.push(item);
        }
        Ok(out)
    }

    fn bad_output(&self, message: String) -> TransformError {
        TransformError::BadOutput {
            script: self.script.clone(),
            message,
        }
    }

    /// Maps a Rhai error to ours, pointing at the innermost position (the line inside the
    /// script function that failed, not the call site of `transform`).
    fn runtime_error(&self, err: EvalAltResult, scale: u64) -> TransformError {
        let mut err = err;
        let mut line = err.position().line();
        let mut inner_fn = None;
        while let EvalAltResult::ErrorInFunctionCall(name, _, inner, _) = err {
            if name != "transform" && name != "transform_batch" {
                inner_fn = Some(name);
            }
            err = *inner;
            line = err.position().line().or(line);
        }
        let limits = &self.limits;
        let limit = |kind, message: String| (Some(kind), message);
        let (kind, message) = match &err {
            EvalAltResult::ErrorTooManyOperations(_) => limit(
                LimitKind::Operations,
                format!("too many operations (limit {})", limits.max_operations.saturating_mul(scale)),
            ),
            EvalAltResult::ErrorTerminated(token, _) if token.as_int() == Ok(TERMINATED_OPERATIONS) => limit(
                LimitKind::Operations,
                format!("too many operations (limit {})", limits.max_operations.saturating_mul(scale)),
            ),
            EvalAltResult::ErrorTerminated(token, _) if token.as_int() == Ok(TERMINATED_TIME) => limit(
                LimitKind::WallClock,
                format!("wall-clock budget exceeded (limit {} ms)", limits.max_time_ms.saturating_mul(scale)),
            ),
            EvalAltResult::ErrorStackOverflow(_) => limit(
                LimitKind::CallDepth,
                format!("call depth exceeded (limit {}): unbounded recursion?", limits.max_call_depth),
            ),
            EvalAltResult::ErrorDataTooLarge(what, _) => {
                let (kind, max) = if what.starts_with("Length of string") {
                    (LimitKind::StringSize, limits.max_string_size)
                } else if what.starts_with("Size of array") {
                    (LimitKind::ArraySize, limits.max_array_size)
                } else {
                    (LimitKind::MapSize, limits.max_map_size)
                };
                limit(kind, format!("{} too large (limit {max})", what.to_lowercase()))
            }
            EvalAltResult::ErrorRuntime(value, _) => (None, format!("script error: {value}")),
            _ => {
                // Rhai's own text, without its "(line N, position M)" suffix: the line is ours.
                err.clear_position();
                (None, err.to_string())
            }
        };
        let message = match inner_fn {
            Some(f) => format!("{message} (in fn {f})"),
            None => message,
        };
        let script = self.script.clone();
        match kind {
            Some(kind) => TransformError::Limit { script, kind, line, message },
            None => TransformError::Runtime { script, line, message },
        }
    }
}

/// Whether the event of `fn transform` can stay bytes (`lazy.rs`: the body only hands it to the
/// lazy helper and returns it) and, when the body is nothing but calls of that helper, the
/// options of each call (see [`scan::calls_only`]). The options are `None` also when `params`
/// are not valid options: the script then runs, and each event fails with the helper's message,
/// as it always did. `entry` is `None` for a script without `transform` or with `transform_batch`.
fn lazy_plan(
    source: &str,
    spans: &[scan::FnSpan],
    ast: &AST,
    entry: Option<&Entry>,
    params: &Dynamic,
) -> (bool, Option<Vec<ScrubOptions>>) {
    let Some((entry, span)) = entry.zip(spans.iter().find(|f| f.name == "transform")) else {
        return (false, None);
    };
    let [event, meta] = [entry.params[0].as_str(), entry.params[1].as_str()];
    let trailing = scan::trailing_identifier(source, span, event);
    // A script function of its own named like the helper would be called instead of it.
    if ast.iter_functions().any(|f| LAZY_HELPERS.contains(&f.name))
        || !scan::event_only_handed_to(source, span, event, &LAZY_HELPERS, trailing)
    {
        return (false, None);
    }
    let calls = scan::calls_only(source, span, [event, meta], LAZY_HELPERS[0], trailing).and_then(|calls| {
        calls
            .into_iter()
            .map(|arg| match arg {
                scan::CallArg::Default => Some(ScrubOptions::default()),
                scan::CallArg::Params => ScrubOptions::from_map(&*params.read_lock::<Map>()?).ok(),
            })
            .collect()
    });
    (true, calls)
}

/// Converts YAML `params` to the read-only value scripts see as `meta.params`.
pub fn params_value(
    script: &ScriptRef,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<Dynamic, TransformError> {
    let value: Dynamic = rhai::serde::to_dynamic(params).map_err(|e| TransformError::Params {
        script: script.clone(),
        message: e.to_string(),
    })?;
    Ok(value.into_read_only())
}

pub fn script_ref(id: &str, file: &Path) -> ScriptRef {
    ScriptRef {
        id: id.to_string(),
        file: file.to_path_buf(),
    }
}
