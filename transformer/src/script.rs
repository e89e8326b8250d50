//! One compiled transformation: its sandboxed engine, its AST, and the calls into it.
//!
//! Limits: sizes and call depth are enforced by Rhai itself (engine settings). Operations and
//! wall-clock time are enforced by our progress callback against a per-thread budget set before
//! each call, because the budget differs per call (a batch gets `n` times the per-event budget)
//! while an engine's settings are fixed and shared by every thread.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rhai::{CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Scope, AST};

use crate::error::{LimitKind, ScriptRef, TransformError};
use crate::{helpers, Limits, Meta};

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
    if operations % CLOCK_CHECK_EVERY == 0 {
        if let Some(deadline) = budget.deadline {
            if Instant::now() >= deadline {
                return Some(Dynamic::from_int(TERMINATED_TIME));
            }
        }
    }
    None
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
    engine
}

/// What one call of `transform` produced for one input event.
pub type Outputs = Vec<Dynamic>;

pub struct Compiled {
    pub script: ScriptRef,
    engine: Arc<Engine>,
    ast: AST,
    limits: Limits,
    /// `meta.params`: shared and read-only, so handing it to each call is a reference-count bump
    /// rather than a deep copy, and no event can change what the next one sees.
    params: Dynamic,
    pub has_transform: bool,
    pub has_batch: bool,
}

impl Compiled {
    pub fn compile(
        script: ScriptRef,
        engine: Arc<Engine>,
        source: &str,
        limits: &Limits,
        params: Dynamic,
    ) -> Result<Compiled, TransformError> {
        let mut ast = engine.compile(source).map_err(|e| TransformError::Compile {
            script: script.clone(),
            line: e.1.line(),
            message: e.0.to_string(),
        })?;
        ast.set_source(script.file.display().to_string());
        let arity = |name: &str| {
            ast.iter_functions()
                .find(|f| f.name == name)
                .map(|f| f.params.len())
        };
        let has_transform = check_arity(&script, arity("transform"), "transform(event, meta)")?;
        let has_batch =
            check_arity(&script, arity("transform_batch"), "transform_batch(events, meta)")?;
        if !has_transform && !has_batch {
            return Err(TransformError::Compile {
                script,
                line: None,
                message: "the script defines neither fn transform(event, meta) nor fn transform_batch(events, meta)".into(),
            });
        }
        Ok(Compiled {
            script,
            engine,
            ast,
            limits: limits.clone(),
            params,
            has_transform,
            has_batch,
        })
    }

    pub fn meta_map(&self, meta: &Meta) -> Map {
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
            self.call("transform", event, Dynamic::from_map(self.meta_map(meta)))
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
            self.call(
                "transform_batch",
                Dynamic::from_array(events),
                Dynamic::from_map(meta),
            )
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

    fn call(&self, name: &str, a: Dynamic, b: Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
        let options = CallFnOptions::new().rewind_scope(true);
        self.engine
            .call_fn_with_options::<Dynamic>(options, &mut Scope::new(), &self.ast, name, (a, b))
            .map(Dynamic::flatten)
    }

    /// Interprets a returned value: a map is one event, `()` a drop, an array a split.
    fn outputs(&self, value: Dynamic) -> Result<Outputs, TransformError> {
        if value.is_map() {
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
            if !item.is_map() {
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

fn check_arity(script: &ScriptRef, found: Option<usize>, wanted: &str) -> Result<bool, TransformError> {
    match found {
        None => Ok(false),
        Some(2) => Ok(true),
        Some(n) => Err(TransformError::Compile {
            script: script.clone(),
            line: None,
            message: format!("fn {wanted} must take 2 parameters, this one takes {n}"),
        }),
    }
}

/// Converts YAML `params` to the shared, read-only value scripts see as `meta.params`.
pub fn params_value(
    script: &ScriptRef,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<Dynamic, TransformError> {
    let value: Dynamic = rhai::serde::to_dynamic(params).map_err(|e| TransformError::Params {
        script: script.clone(),
        message: e.to_string(),
    })?;
    Ok(value.into_read_only().into_shared())
}

pub fn script_ref(id: &str, file: &Path) -> ScriptRef {
    ScriptRef {
        id: id.to_string(),
        file: file.to_path_buf(),
    }
}
